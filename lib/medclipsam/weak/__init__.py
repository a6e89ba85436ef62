"""MedCLIP-SAMv2's weakly supervised stage in the product: a segmentation network retrained on the
labels people accepted, with a checkpoint ensemble whose disagreement drives active learning
(:mod:`.schedule`, :mod:`.data`, :mod:`.train`, :mod:`.ensemble`, :mod:`.uncertainty`)."""
