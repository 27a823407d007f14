"""Native DNABERT-S against test vectors made with the reference implementation (see
tests/data/dnabert_s/README.md), plus the tokenizer, the published layouts and the random models."""

import hashlib
import json
import os
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from virnucflow.errors import ModelError
from virnucflow.models.dnabert_s import DnabertSConfig, alibi_bias, alibi_slopes, document_block_mask
from virnucflow.models.dnabert_s_encoder import load_dnabert_s
from virnucflow.models.random_weights import write_random_dnabert_s

VECTORS = sorted((Path(__file__).parent / "data" / "dnabert_s").glob("*/"))


def random_dna(n, seed):
    rng = random.Random(seed)
    return "".join(rng.choice("ACGT") for _ in range(n))


@pytest.mark.parametrize("attention", ["padded", "packed"])
@pytest.mark.parametrize("folder", VECTORS, ids=lambda p: p.name)
def test_embeddings_equal_the_reference_implementation(folder, attention):
    inputs = json.loads((folder / "inputs.json").read_text())
    expected = load_file(str(folder / "expected.safetensors"))["pooled"]  # one sequence at a time
    encoder = load_dnabert_s(folder, attention=attention)
    tokens = [encoder.tokenize(s) for s in inputs["sequences"]]
    assert tokens == inputs["token_ids"]  # as transformers' tokenizer(seq)["input_ids"] on the same file
    batched = encoder.embed(tokens)  # 1 to 533 tokens in one batch
    assert (batched - expected).abs().max() < 1e-5


def test_a_row_does_not_depend_on_its_batch(tmp_path):
    encoder = load_dnabert_s(write_random_dnabert_s(tmp_path / "m", seed=4), attention="padded")
    short, long = encoder.tokenize(random_dna(40, 1)), encoder.tokenize(random_dna(900, 2))
    alone = encoder.embed([short])[0]
    for batch in ([short, long], [long, short, short], [short] * 5):
        assert (encoder.embed(batch)[batch.index(short)] - alone).abs().max() < 1e-5
    encoder.attention = "packed"
    assert (encoder.embed([long, short])[1] - alone).abs().max() < 1e-5


def test_long_sequences_are_neither_padded_nor_cut(tmp_path):
    # The published tokenizer.json pads every sequence to 2000 tokens and truncates longer ones.
    folder = VECTORS[0]
    assert json.loads((folder / "tokenizer.json").read_text())["padding"]["strategy"] == {"Fixed": 2000}
    encoder = load_dnabert_s(folder)
    ids = encoder.tokenize(random_dna(9000, 3))
    assert len(ids) > 2000 and ids[0] == 1 and ids[-1] == 2 and 3 not in ids  # [CLS] ... [SEP], no [PAD]
    assert encoder.tokenize("A") == [1, 5, 2]


def test_alibi_slopes_for_head_counts_that_are_not_a_power_of_two():
    assert alibi_slopes(8) == [2 ** -(i + 1) for i in range(8)]
    # 12 heads: the 8 slopes of 8 heads, then every other slope of 16 heads (2^-0.5, 2^-1.5, ...).
    assert alibi_slopes(12) == pytest.approx(alibi_slopes(8) + [2 ** -(0.5 + i) for i in range(4)])


@pytest.mark.parametrize("lengths", [[5], [128], [127, 1], [128, 129], [300, 2, 2, 500, 128, 1, 257], [2] * 200])
def test_packed_block_mask_keeps_every_token_in_its_sequence(lengths):
    from torch.nn.attention.flex_attention import create_block_mask

    cu_seqlens = torch.tensor([0] + lengths).cumsum(0).int()
    document = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    tokens = sum(lengths)
    reference = create_block_mask(lambda b, h, q, k: document[q] == document[k], None, None, tokens, tokens,
                                  device="cpu")
    # The same tiles are visited as with the mask evaluated on every pair of tokens.
    assert torch.equal(document_block_mask(cu_seqlens).to_dense(), reference.to_dense())


@pytest.mark.slow
def test_compiled_packed_kernel_equals_attention_per_sequence():
    """The fused flex_attention kernel (here inductor's CPU one; CUDA uses Triton) honours the block mask."""
    from torch.nn.attention.flex_attention import flex_attention

    torch.manual_seed(0)
    slopes = torch.tensor(alibi_slopes(12))
    cu = torch.tensor([0, 300, 302, 304, 804, 932, 933, 1190]).int()
    q, k, v = (torch.randn(1, 12, 1190, 8) for _ in range(3))
    out = torch.compile(flex_attention, dynamic=False)(
        q, k, v, score_mod=lambda s, b, h, qi, ki: s - slopes[h] * (qi - ki).abs(), block_mask=document_block_mask(cu))
    bounds = cu.tolist()
    reference = torch.cat([F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b],
                                                          attn_mask=alibi_bias(slopes, b - a))
                           for a, b in zip(bounds[:-1], bounds[1:])], dim=2)
    assert (out - reference).abs().max() < 1e-5


def test_weights_with_or_without_the_bert_prefix_load_the_same(tmp_path):
    folder = write_random_dnabert_s(tmp_path / "m", seed=3)
    tokens = [load_dnabert_s(folder).tokenize(random_dna(120, 5))]
    plain = load_dnabert_s(folder).embed(tokens)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    prefixed = {f"bert.{k}": v for k, v in state.items()}  # BertForMaskedLM's names, with its head
    prefixed["cls.predictions.decoder.bias"] = torch.zeros(3)
    (folder / "pytorch_model.bin").unlink()
    save_file(prefixed, str(folder / "model.safetensors"))
    assert torch.equal(load_dnabert_s(folder).embed(tokens), plain)


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.safetensors"])
def test_a_missing_encoder_key_is_named_with_its_file(tmp_path, weights):
    folder = write_random_dnabert_s(tmp_path / "m", seed=3)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    del state["encoder.layer.1.mlp.wo.weight"]
    (folder / "pytorch_model.bin").unlink()
    if weights == "model.safetensors":
        save_file(state, str(folder / weights))
    else:
        torch.save(state, folder / weights)
    with pytest.raises(ModelError, match=f"{weights}: missing key encoder.layer.1.mlp.wo.weight"):
        load_dnabert_s(folder)


def test_a_config_without_the_model_size_is_refused(tmp_path):
    folder = write_random_dnabert_s(tmp_path / "m", seed=3)
    config = json.loads((folder / "config.json").read_text())
    del config["num_attention_heads"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="config.json: no num_attention_heads"):
        load_dnabert_s(folder)


def test_random_models_are_deterministic_and_load(tmp_path):
    digests = []
    for run in range(2):
        size = DnabertSConfig(hidden=24, layers=1, heads=3, intermediate=32, vocab_size=64)
        folder = write_random_dnabert_s(tmp_path / str(run), size, seed=1)
        digests.append({f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())})
    assert digests[0] == digests[1]
    assert set(digests[0]) == {"config.json", "pytorch_model.bin", "special_tokens_map.json", "tokenizer.json",
                               "tokenizer_config.json"}
    encoder = load_dnabert_s(tmp_path / "0")
    assert encoder.dim == 24
    assert encoder.embed([encoder.tokenize("ACGTACGGATTACA")]).shape == (1, 24)


@pytest.mark.parametrize("case", ["with_orfs", "fixed_500bp"])
def test_published_weights_give_virnucpro_features(reference_dir, case):
    """The real model, where a user has it cached (`make download-models`), against the features
    the original VirNucPro computed. Tolerance not yet calibrated: the original may have run the
    reference's Triton kernel, which computes attention in fp16."""
    from virnucflow.models.resolve import resolve_model

    try:
        folder, _ = resolve_model("zhihan1996/DNABERT-S", "dna")
    except ModelError as exc:
        pytest.skip(f"zhihan1996/DNABERT-S is not in the local cache ({exc})")
    lines = (reference_dir / case / "identified_nucleotide.fa").read_text().split()
    sequences = dict(zip([h[1:] for h in lines[0::2]], lines[1::2]))
    features = torch.load(reference_dir / case / "output_1_DNABERT_S.pt", weights_only=True)
    expected = torch.tensor([row["mean_representation"] for row in features["data"]])
    encoder = load_dnabert_s(folder, attention="padded")
    got = encoder.embed([encoder.tokenize(sequences[row["label"]]) for row in features["data"]])
    assert (got - expected).abs().max() < 5e-3


def test_sharded_weights_load_like_one_file(tmp_path):
    """Two safetensors shards and their index, as Hugging Face saves a large model."""
    from virnucflow.models.resolve import model_width

    folder = write_random_dnabert_s(tmp_path / "m", seed=6)
    encoder = load_dnabert_s(folder)
    tokens = [encoder.tokenize(random_dna(n, n)) for n in (30, 300, 700)]
    expected = encoder.embed(tokens)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    (folder / "pytorch_model.bin").unlink()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(folder / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert torch.equal(load_dnabert_s(folder).embed(tokens), expected)
    assert model_width("dna", str(folder)) == 48
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelError, match="shard model-00002-of-00002.safetensors is missing"):
        load_dnabert_s(folder)


class SystemCall:
    """Unpickling this with plain pickle would run a shell command (os.system)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Exec:
    """Unpickling this with plain pickle would run exec()."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.mark.parametrize("payload, named", [(SystemCall, f"{os.system.__module__}.system"), (Exec, "builtins.exec")])
def test_weights_that_would_run_code_are_refused_in_one_line(tmp_path, payload, named):
    folder = write_random_dnabert_s(tmp_path / "m", seed=3)
    marker = tmp_path / "executed"
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "pooler.extra": payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelError) as refused:
        load_dnabert_s(folder)
    message = str(refused.value)
    assert message.startswith(f"{folder / 'pytorch_model.bin'}: refused to load: it names {named}")
    assert "could run code" in message and "\n" not in message and "weights_only" not in message
    assert not marker.exists()


# --- attention choice, compiled layers, no reads from the device ------------------------------


def test_auto_attention_is_padded_on_every_device():
    """Padded SDPA with the ALiBi bias needs no compiler (packed flex_attention costs 8-9 s of compiling
    per job on a GPU) and was the faster one on an H200; packed stays an explicit choice."""
    from virnucflow.models.dnabert_s_encoder import DnabertSEncoder

    def choose_attention(attention, device="cuda", dtype=torch.bfloat16, head_dim=64):
        return DnabertSEncoder.choose_attention(attention, device, dtype, head_dim)

    assert choose_attention("auto") == "padded" and choose_attention("auto", "cpu", torch.float32) == "padded"
    assert choose_attention("packed") == "packed" and choose_attention("padded") == "padded"
    with pytest.raises(ModelError, match="attention 'flash' is not one of auto, padded, packed"):
        choose_attention("flash")


def test_cpu_encoder_stays_padded_fp32(tmp_path):
    encoder = load_dnabert_s(write_random_dnabert_s(tmp_path / "m", seed=4))
    assert (encoder.attention, encoder.dtype, encoder.compiled) == ("padded", torch.float32, False)


@pytest.mark.parametrize("attention", ["padded", "packed"])
def test_compiled_layers_equal_the_reference_implementation(attention):
    """torch.compile of the layers (inductor's CPU code here, Triton on a GPU), against the test vectors."""
    folder = VECTORS[0]
    inputs = json.loads((folder / "inputs.json").read_text())
    expected = load_file(str(folder / "expected.safetensors"))["pooled"]
    encoder = load_dnabert_s(folder, attention=attention, compile_layers=True)
    assert encoder.compiled and encoder.attention == attention
    assert (encoder.embed(inputs["token_ids"]) - expected).abs().max() < 1e-5


def test_a_batch_is_queued_without_reading_back_from_the_device():
    """On the meta device every read of a value (.item(), .tolist(), a boolean mask, a repeat count, a
    Python if on a tensor) raises: what passes here never waits for a GPU inside a batch (padded: auto's
    path; the packed one's block mask too, flex_attention itself does not run on meta)."""
    from virnucflow.models.dnabert_s import DNABERTS
    from virnucflow.models.dnabert_s_encoder import DnabertSEncoder
    from virnucflow.models.random_weights import train_tokenizer

    tokenizer = train_tokenizer(64, reads=20, length=100)
    with torch.device("meta"):
        model = DNABERTS(DnabertSConfig(hidden=48, layers=2, heads=6, intermediate=96, vocab_size=64), init=False)
    encoder = DnabertSEncoder(model, tokenizer, "meta", device="meta", dtype=torch.bfloat16)
    prepared = encoder.prepare([encoder.tokenize(random_dna(n, n)) for n in (40, 300, 7)])
    rows = encoder.pooled(prepared)
    assert rows.device.type == "meta" and rows.shape == (3, 48) and rows.dtype == torch.float32
    block_mask = document_block_mask(torch.tensor([0, 300, 302, 700]).int().to("meta"), tokens=700)
    assert block_mask.shape[-2:] == (700, 700)
