"""The Jena-climate forecaster: its recipe, data (CSV loading, split, normalization,
windows), model, search space and the task the pipeline runs."""
