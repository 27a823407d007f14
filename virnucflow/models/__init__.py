"""Native PyTorch models: ESM-2 and DNABERT-S, loading the published weights.

- esm2.py, dnabert_s.py: the models (nn.Module trees named like the published state dicts)
- esm2_alphabet.py: ESM-2's alphabet and tokenizer
- esm2_pretrained.py, dnabert_s_pretrained.py: the published checkpoints -> a model (and tokenizer)
- esm2_encoder.py, dnabert_s_encoder.py: the encoders of the embed jobs (batching, VirNucPro's pooling)
- batches.py: token-id lists -> packed or padded tensors, for both encoders
- checkpoints.py: model files on disk for both (weight files, tensors read without running code, config.json)
- random_weights.py: random-weight models in the published layouts (tests, demo, benchmarks)
- resolve.py: where a model spec points (local path, Hugging Face cache, torch hub cache) and load_encoder
"""
