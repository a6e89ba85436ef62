"""Serving the engine to MONAI Label clients (3D Slicer, OHIF): the label vocabulary, request
options, lazily loaded models, the zero-shot infer task's work, a DICOM-folder datastore and the
non-blocking infer route. ``apps/medclipsam`` wires these into a MONAI Label app; modules that need
``monailabel`` import it themselves (:mod:`.dicom_datastore`, :mod:`.routes`, :mod:`.app_setup`)."""
