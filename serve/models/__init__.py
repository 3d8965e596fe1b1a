"""Self-hosted models: engines, the model-server deployment, and the tiny local model."""
