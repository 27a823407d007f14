"""Native PyTorch models: ESM-2 and DNABERT-S, loading the published weights."""
