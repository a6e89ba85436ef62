"""The demo CLIP recipe's parts; ``training/clip_demo.py`` is its command line and re-exports them.

``prompts`` (structure prompts and presence labels) → ``data`` (CLIP input, token coverage,
vocabulary) → ``forward`` and ``losses`` (one training step) → ``calibration`` and ``tuning`` (after
training) → ``card`` (the written folder); ``model`` builds the model and holds the schedule, and
``train`` (:func:`~clip_recipe.train.train_demo_clip`) runs them in order.
"""
