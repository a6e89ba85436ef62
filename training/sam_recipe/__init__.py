"""The demo SAM recipe's parts; ``training/sam_demo.py`` is its command line and re-exports them.

``sampling`` (training prompts) and ``inputs`` (augmentation, SAM's input transform) feed ``losses``
(one image's prompts decoded and scored); ``train`` (:func:`~sam_recipe.train.train_demo_sam`) runs the
steps, then ``evaluate`` (held-out Dice through ``SamSegmenter``) and ``card`` (the model card).
"""
