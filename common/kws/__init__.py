"""The keyword spotter: its recipe, data (split lists, clips, cached features,
augmentation), numpy front end, made negatives, noise and robustness reports,
feature masking, distillation, model, search space, the task the pipeline runs, and
the streaming detector ``kws_detect.py`` uses."""
