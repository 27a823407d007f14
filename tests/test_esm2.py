"""Native ESM-2 against the reference implementations (fair-esm, transformers) on tiny random weights."""

import argparse
import hashlib
import json
import os

import esm
import pytest
import torch
from safetensors.torch import load_file, save_file

from virnucflow.errors import ModelError
from virnucflow.models.esm2 import Esm2Config
from virnucflow.models.esm2_alphabet import TOKENS, tokenize
from virnucflow.models.esm2_encoder import load_esm2
from virnucflow.models.random_weights import write_random_esm2

# Mixed lengths; the 1100-residue one is longer than VirNucPro's 1024-residue pooling window.
SEQUENCES = ["MKTAYIAKQR", "GAVLIMFWP" * 3, "ACDEFGHIKLMNPQRSTVWYXBZUO", "MKV" * 366 + "MW", "W"]
LAYERS, DIM, HEADS = 3, 64, 4


def virnucpro_pool(representations, sequences):
    """VirNucPro's pooling of a padded (batch, tokens, dim) output: mean over residues 1..min(L, 1024)."""
    return torch.stack([representations[i, 1 : min(len(s), 1024) + 1].mean(0) for i, s in enumerate(sequences)])


def perturb(model, seed):
    """Random weights of a useful size (fresh inits are near-trivial: LayerNorm 1/0, small Linear)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def fair_esm_model(tmp_path_factory):
    """A tiny fair-esm ESM2 saved in the torch hub layout, and its pooled representations."""
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    torch.manual_seed(0)
    model = perturb(esm.model.esm2.ESM2(num_layers=LAYERS, embed_dim=DIM, attention_heads=HEADS, alphabet=alphabet), 0)
    # As the published files: encoder under encoder.sentence_encoder., lm_head under encoder., the
    # contact regression in a separate file, the training config as an argparse.Namespace.
    state = {("encoder." if k.startswith("lm_head") else "encoder.sentence_encoder.") + k: v
             for k, v in model.state_dict().items() if not k.startswith("contact_head")}
    cfg = argparse.Namespace(encoder_layers=LAYERS, encoder_embed_dim=DIM, encoder_attention_heads=HEADS, token_dropout=True)
    path = tmp_path_factory.mktemp("esm") / "esm2_t3_tiny.pt"
    torch.save({"model": state, "cfg": {"model": cfg}}, path)
    _, _, tokens = alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(SEQUENCES)])
    with torch.no_grad():
        reps = model(tokens, repr_layers=[0, 2, 3])["representations"]
    return path, alphabet, {layer: virnucpro_pool(reps[layer], SEQUENCES) for layer in reps}


def test_alphabet_and_tokens_equal_fair_esm(fair_esm_model):
    _, alphabet, _ = fair_esm_model
    assert TOKENS == alphabet.all_toks
    for seq in SEQUENCES:
        assert tokenize(seq) == [alphabet.cls_idx] + alphabet.encode(seq) + [alphabet.eos_idx]
    # fair-esm raises KeyError on a symbol outside its alphabet; here it is <unk>, as its batch converter intends
    assert tokenize("m*") == [alphabet.cls_idx, alphabet.unk_idx, alphabet.unk_idx, alphabet.eos_idx]


@pytest.mark.parametrize("attention", ["padded", "packed"])
@pytest.mark.parametrize("layer", [None, 2, 0])
def test_embeddings_equal_fair_esm(fair_esm_model, layer, attention):
    path, _, expected = fair_esm_model
    encoder = load_esm2(path, layer=layer, attention=attention)
    assert (encoder.name, encoder.dim, encoder.layer) == ("esm2_t3_tiny", DIM, LAYERS if layer is None else layer)
    got = encoder.embed([tokenize(s) for s in SEQUENCES])
    assert got.dtype == torch.float32 and got.shape == (len(SEQUENCES), DIM)
    assert (got - expected[encoder.layer]).abs().max() < 1e-5


@pytest.mark.parametrize("attention", ["padded", "packed"])
def test_batch_composition_does_not_change_embeddings(fair_esm_model, attention):
    encoder = load_esm2(fair_esm_model[0], attention=attention)
    alone = torch.cat([encoder.embed([tokenize(s)]) for s in SEQUENCES])
    mixed = encoder.embed([tokenize(s) for s in SEQUENCES])
    reordered = encoder.embed([tokenize(s) for s in reversed(SEQUENCES)]).flip(0)
    assert (alone - mixed).abs().max() < 1e-5
    assert (alone - reordered).abs().max() < 1e-5


def test_pooling_stops_at_1024_residues_but_the_model_sees_them_all(fair_esm_model):
    encoder = load_esm2(fair_esm_model[0])
    long = "MKV" * 400
    pooled = encoder.embed([tokenize(long), tokenize(long[:1024] + "W" * 100), tokenize(long[:1024])])
    with torch.no_grad():
        hidden = encoder.model(torch.tensor([tokenize(long)]))[0]  # (1202, dim)
    assert (pooled[0] - hidden[1:1025].mean(0)).abs().max() < 1e-5
    assert (pooled[0] - hidden[1:1201].mean(0)).abs().max() > 1e-3
    # Residues past 1024 are not averaged, but they are context for the first 1024: the input is not truncated.
    assert (pooled[0] - pooled[1]).abs().max() > 1e-4
    assert (pooled[0] - pooled[2]).abs().max() > 1e-4


def test_bf16_model_keeps_rotary_positions_exact(fair_esm_model):
    path, _, expected = fair_esm_model
    encoder = load_esm2(path, dtype=torch.bfloat16, attention="packed")
    rot_emb = encoder.model.layers[0].self_attn.rot_emb
    assert encoder.model.embed_tokens.weight.dtype == torch.bfloat16 and rot_emb.inv_freq.dtype == torch.float32
    # A bf16 angle (position x frequency) is off by radians past position ~256; these stay within bf16 rounding.
    q = torch.randn(1100, HEADS, DIM // HEADS)
    exact, _ = rot_emb(q, q, torch.arange(1100))
    rotated, _ = rot_emb(q.bfloat16(), q.bfloat16(), torch.arange(1100))
    assert ((rotated.float() - exact).norm(dim=-1) / exact.norm(dim=-1)).max() < 0.02
    got = encoder.embed([tokenize(s) for s in SEQUENCES])
    assert ((got - expected[LAYERS]).norm(dim=1) / expected[LAYERS].norm(dim=1)).max() < 0.03


def test_layer_choice_and_bad_input(fair_esm_model):
    path = fair_esm_model[0]
    assert load_esm2(path, layer=-1).layer == LAYERS
    with pytest.raises(ModelError, match="layer 4 does not exist"):
        load_esm2(path, layer=4)
    with pytest.raises(ValueError, match="at least one residue"):
        load_esm2(path).embed([tokenize("")])


# --- Hugging Face layout, against transformers ------------------------------------------------


@pytest.fixture(scope="module")
def transformers_model(tmp_path_factory):
    """A tiny transformers EsmForMaskedLM saved with save_pretrained, and pooled hidden states of its EsmModel."""
    transformers = pytest.importorskip("transformers")
    config = transformers.EsmConfig(
        vocab_size=33, hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=4 * DIM,
        pad_token_id=1, mask_token_id=32, position_embedding_type="rotary", token_dropout=True,
        emb_layer_norm_before=False, layer_norm_eps=1e-5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(1)
    model = perturb(transformers.EsmForMaskedLM(config), 1)
    folder = tmp_path_factory.mktemp("hf") / "esm2_t3_tiny_hf"
    model.save_pretrained(folder)
    bare = tmp_path_factory.mktemp("hf") / "bare"
    model.esm.save_pretrained(bare)  # an EsmModel: keys without the esm. prefix
    batch = [tokenize(s) for s in SEQUENCES]
    width = max(map(len, batch))
    ids = torch.tensor([t + [1] * (width - len(t)) for t in batch])
    with torch.no_grad():
        hidden = model.esm(input_ids=ids, attention_mask=(ids != 1).long(), output_hidden_states=True).hidden_states
    return folder, bare, {layer: virnucpro_pool(hidden[layer], SEQUENCES) for layer in (2, LAYERS)}


@pytest.mark.parametrize("attention", ["padded", "packed"])
@pytest.mark.parametrize("layer", [None, 2])
def test_hugging_face_layout_equals_transformers(transformers_model, layer, attention):
    folder, bare, expected = transformers_model
    for source in (folder, bare):
        encoder = load_esm2(source, layer=layer, attention=attention)
        got = encoder.embed([tokenize(s) for s in SEQUENCES])
        assert (got - expected[encoder.layer]).abs().max() < 1e-5


# --- random models in the published layouts --------------------------------------------------


def _digests(root):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", ["fair-esm", "hf"])
def test_random_models_are_deterministic(tmp_path, layout):
    args = dict(layout=layout, config=Esm2Config(layers=2, embed_dim=32, heads=4), seed=9)
    first = write_random_esm2(tmp_path / "a" / "m", **args)
    second = write_random_esm2(tmp_path / "b" / "another_name", **args)  # the bytes do not depend on the name
    assert sorted(_digests(tmp_path / "a").values()) == sorted(_digests(tmp_path / "b").values()) != []
    other = write_random_esm2(tmp_path / "c" / "m", **{**args, "seed": 10})
    assert _digests(tmp_path / "c") != _digests(tmp_path / "a")
    assert first.exists() and second.exists() and other.exists()


@pytest.mark.filterwarnings("ignore:Regression weights not found")  # the contact head, unused here
def test_random_fair_esm_file_is_read_by_fair_esm_itself(tmp_path):
    path = write_random_esm2(tmp_path / "esm2_t2_random.pt", "fair-esm", Esm2Config(layers=2, embed_dim=32, heads=4))
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(path, weights_only=True)
    model, alphabet = esm.pretrained.load_model_and_alphabet_core("esm2_t2_random", data)
    _, _, tokens = alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(SEQUENCES)])
    with torch.no_grad():
        expected = virnucpro_pool(model.eval()(tokens, repr_layers=[2])["representations"][2], SEQUENCES)
    assert (load_esm2(path).embed([tokenize(s) for s in SEQUENCES]) - expected).abs().max() < 1e-5


def test_random_hf_folder_is_read_by_transformers_itself(tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = write_random_esm2(tmp_path / "esm2_hf", "hf", Esm2Config(layers=2, embed_dim=32, heads=4), seed=5)
    model, info = transformers.EsmModel.from_pretrained(folder, output_loading_info=True, add_pooling_layer=False)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    batch = [tokenize(s) for s in SEQUENCES]
    width = max(map(len, batch))
    ids = torch.tensor([t + [1] * (width - len(t)) for t in batch])
    with torch.no_grad():
        hidden = model.eval()(input_ids=ids, attention_mask=(ids != 1).long()).last_hidden_state
    assert (load_esm2(folder).embed(batch) - virnucpro_pool(hidden, SEQUENCES)).abs().max() < 1e-5
    tokenizer = transformers.EsmTokenizer.from_pretrained(folder)
    assert tokenizer(SEQUENCES[2])["input_ids"] == tokenize(SEQUENCES[2])


def test_both_layouts_of_one_random_model_agree(tmp_path):
    args = dict(config=Esm2Config(layers=2, embed_dim=32, heads=4), seed=5)
    pt = write_random_esm2(tmp_path / "esm.pt", "fair-esm", **args)
    hf = write_random_esm2(tmp_path / "hf", "hf", **args)
    tokens = [tokenize(s) for s in SEQUENCES]
    assert torch.equal(load_esm2(pt).embed(tokens), load_esm2(hf).embed(tokens))
    assert sorted(p.name for p in hf.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]


def test_hf_pytorch_model_bin_and_sharded_folders_load(tmp_path):
    folder = write_random_esm2(tmp_path / "hf", "hf", Esm2Config(layers=2, embed_dim=32, heads=4), seed=4)
    tokens = [tokenize(s) for s in SEQUENCES[:3]]
    expected = load_esm2(folder).embed(tokens)
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")  # the older format of the same repos
    assert torch.equal(load_esm2(folder).embed(tokens), expected)
    (folder / "pytorch_model.bin").unlink()
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    for name, part in shards.items():
        save_file({k: weights[k] for k in part}, folder / name)
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert torch.equal(load_esm2(folder).embed(tokens), expected)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelError, match="shard model-00002-of-00002.safetensors is missing"):
        load_esm2(folder)


def test_legacy_torch_save_format_loads(tmp_path):
    path = write_random_esm2(tmp_path / "m.pt", "fair-esm", Esm2Config(layers=2, embed_dim=32, heads=4))
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(path, weights_only=True)
    legacy = tmp_path / "legacy.pt"
    torch.save(data, legacy, _use_new_zipfile_serialization=False)  # not a zip: read without mmap
    tokens = [tokenize(s) for s in SEQUENCES[:3]]
    assert torch.equal(load_esm2(path).embed(tokens), load_esm2(legacy).embed(tokens))


# --- errors and safety ------------------------------------------------------------------------


def test_incomplete_fair_esm_checkpoint_names_file_and_key(tmp_path):
    path = write_random_esm2(tmp_path / "m.pt", "fair-esm", Esm2Config(layers=2, embed_dim=32, heads=4))
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(path, weights_only=True)
    del data["model"]["encoder.sentence_encoder.layers.1.fc2.weight"]
    torch.save(data, path)
    with pytest.raises(ModelError, match=r"m\.pt: missing key encoder\.sentence_encoder\.layers\.1\.fc2\.weight"):
        load_esm2(path)
    path = write_random_esm2(tmp_path / "short.pt", "fair-esm", Esm2Config(layers=2, embed_dim=32, heads=4))
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(path, weights_only=True)
    data["cfg"]["model"].encoder_layers = 3  # the config promises a layer the weights lack
    torch.save(data, path)
    with pytest.raises(ModelError, match=r"short\.pt: missing key encoder\.sentence_encoder\.layers\.2\..* 3-layer ESM-2"):
        load_esm2(path)


def test_truncated_or_foreign_files_are_model_errors(tmp_path):
    path = write_random_esm2(tmp_path / "cut.pt", "fair-esm", Esm2Config(layers=2, embed_dim=32, heads=4))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"cut\.pt: cannot read this checkpoint"):
        load_esm2(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=r"junk\.pt: cannot read"):
        load_esm2(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match=r"other\.pt: not a fair-esm checkpoint"):
        load_esm2(tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not found"):
        load_esm2(tmp_path / "nowhere.pt")


def test_incomplete_hf_folder_names_file_and_key(tmp_path):
    folder = write_random_esm2(tmp_path / "hf", "hf", Esm2Config(layers=2, embed_dim=32, heads=4))
    weights = load_file(folder / "model.safetensors")
    del weights["esm.encoder.layer.1.output.dense.weight"]
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ModelError, match=r"hf: missing key esm\.encoder\.layer\.1\.output\.dense\.weight"):
        load_esm2(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no model.safetensors or pytorch_model.bin"):
        load_esm2(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "position_embedding_type": "absolute"}))
    with pytest.raises(ModelError, match="config.json: not ESM-2"):
        load_esm2(folder)


class ForeignConfig:
    """Stands for a training config class of another code base (not allowlisted anywhere)."""

    def __init__(self):
        self.encoder_layers, self.encoder_embed_dim, self.encoder_attention_heads, self.token_dropout = 2, 32, 4, True


class Payload:
    """Unpickling this with plain pickle would run exec()."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_checkpoint_code_never_runs_and_foreign_config_still_reads(tmp_path):
    path = write_random_esm2(tmp_path / "m.pt", "fair-esm", Esm2Config(layers=2, embed_dim=32, heads=4))
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(path, weights_only=True)
    marker = tmp_path / "executed"
    data["cfg"] = {"model": ForeignConfig(), "extra": Payload(marker)}
    torch.save(data, path)
    tokens = [tokenize(s) for s in SEQUENCES[:3]]
    got = load_esm2(path).embed(tokens)
    assert not marker.exists()
    reference = write_random_esm2(tmp_path / "r.pt", "fair-esm", Esm2Config(layers=2, embed_dim=32, heads=4))
    assert torch.equal(got, load_esm2(reference).embed(tokens))


class SystemCall:
    """Unpickling this with plain pickle would run a shell command (os.system)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("layout", ["fair-esm", "hf"])
def test_a_checkpoint_that_would_run_a_command_is_refused_in_one_line(tmp_path, layout):
    marker = tmp_path / "executed"
    if layout == "fair-esm":
        path = write_random_esm2(tmp_path / "m.pt", "fair-esm", Esm2Config(layers=2, embed_dim=32, heads=4))
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, weights_only=True)
        data["cfg"]["extra"] = SystemCall(marker)
        torch.save(data, path)
    else:
        folder = write_random_esm2(tmp_path / "hf", "hf", Esm2Config(layers=2, embed_dim=32, heads=4))
        weights = load_file(folder / "model.safetensors")
        (folder / "model.safetensors").unlink()
        path = folder / "pytorch_model.bin"
        torch.save({**weights, "extra": SystemCall(marker)}, path)
    with pytest.raises(ModelError) as refused:
        load_esm2(path if layout == "fair-esm" else path.parent)
    message = str(refused.value)
    assert message.startswith(f"{path}: refused to load: it names {os.system.__module__}.system")
    assert "could run code" in message and "\n" not in message and "weights_only" not in message
    assert not marker.exists()


# --- fused projections, attention choice, compiled layers, no reads from the device -----------


def test_module_differs_from_fair_esm_only_by_the_stacked_qkv_projection():
    from virnucflow.models.esm2 import ESM2
    from virnucflow.models.esm2_pretrained import checkpoint_shapes

    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    reference = esm.model.esm2.ESM2(num_layers=2, embed_dim=DIM, attention_heads=HEADS, alphabet=alphabet)
    expected = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith(("lm_head", "contact_head"))}
    with torch.device("meta"):
        model = ESM2(Esm2Config(2, DIM, HEADS), init=False)
    assert list(checkpoint_shapes(model).items()) == list(expected.items())  # names, shapes and order
    fused = {k for k in model.state_dict() if k not in expected}
    assert fused == {f"layers.{i}.self_attn.qkv_proj.{leaf}" for i in range(2) for leaf in ("weight", "bias")}


def test_stacked_projection_holds_q_k_v_in_that_order(fair_esm_model):
    path = fair_esm_model[0]
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = torch.load(path, weights_only=True)["model"]
    qkv = load_esm2(path).model.layers[1].self_attn.qkv_proj
    prefix = "encoder.sentence_encoder.layers.1.self_attn."
    for leaf in ("weight", "bias"):
        parts = [state[f"{prefix}{name}_proj.{leaf}"] for name in "qkv"]
        assert torch.equal(getattr(qkv, leaf), torch.cat(parts))


def test_auto_attention_is_packed_only_where_flash_varlen_takes_the_head_size(monkeypatch):
    from virnucflow.models import esm2
    from virnucflow.models.esm2_encoder import Esm2Encoder

    choose_attention = Esm2Encoder.choose_attention

    monkeypatch.setattr(esm2, "flash_varlen", lambda: (lambda *args: None))  # as a torch that has the kernel
    bf16 = torch.bfloat16
    assert choose_attention("auto", "cuda", bf16, 64) == "packed"
    assert choose_attention("auto", "cuda:1", torch.float16, 16) == "packed"
    # FlashAttention's varlen kernel fails on "head_size must be a multiple of 8" and above 256
    assert choose_attention("auto", "cuda", bf16, 12) == "padded"
    assert choose_attention("auto", "cuda", bf16, 264) == "padded"
    assert choose_attention("auto", "cuda", torch.float32, 64) == "padded"
    assert choose_attention("auto", "cpu", bf16, 64) == "padded"
    assert choose_attention("packed", "cuda", bf16, 12) == "packed"  # explicit: attention one sequence at a time
    assert not esm2.flash_varlen_runs("cuda", bf16, 12)
    monkeypatch.setattr(esm2, "flash_varlen", lambda: None)  # a torch without the kernel
    assert choose_attention("auto", "cuda", bf16, 64) == "padded"
    with pytest.raises(ModelError, match="attention 'flash' is not one of auto, padded, packed"):
        choose_attention("flash", "cuda", bf16, 64)


def test_head_size_not_a_multiple_of_8_packed_equals_padded(tmp_path):
    path = write_random_esm2(tmp_path / "m.pt", "fair-esm", Esm2Config(layers=2, embed_dim=36, heads=3))  # head size 12
    tokens = [tokenize(s) for s in SEQUENCES]
    padded = load_esm2(path, attention="padded").embed(tokens)
    assert (load_esm2(path, attention="packed").embed(tokens) - padded).abs().max() < 1e-5


@pytest.mark.parametrize("attention", ["padded", "packed"])
def test_compiled_layers_equal_fair_esm(fair_esm_model, attention):
    """torch.compile of the layers (inductor's CPU code here, Triton on a GPU), against fair-esm in fp32."""
    path, _, expected = fair_esm_model
    encoder = load_esm2(path, attention=attention, compile_layers=True)
    assert encoder.compiled
    tokens = [tokenize(s) for s in SEQUENCES]
    assert (encoder.embed(tokens) - expected[LAYERS]).abs().max() < 1e-5
    alone = torch.cat([encoder.embed([t]) for t in tokens[:3]])  # other token counts: no new graph needed
    assert (alone - expected[LAYERS][:3]).abs().max() < 1e-5


def test_layers_run_eagerly_where_compiling_fails(fair_esm_model, monkeypatch, caplog):
    def broken_compile(fn, **options):
        def fails(*args, **kwargs):
            raise RuntimeError("no working C compiler")
        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    path, _, expected = fair_esm_model
    encoder = load_esm2(path, attention="packed", compile_layers=True)
    assert not encoder.compiled
    assert "compiled layers (torch.compile) failed on cpu: RuntimeError: no working C compiler" in caplog.text
    assert (encoder.embed([tokenize(s) for s in SEQUENCES]) - expected[LAYERS]).abs().max() < 1e-5


@pytest.mark.parametrize("attention", ["padded", "packed"])
def test_a_batch_is_queued_without_reading_back_from_the_device(attention):
    """On the meta device every read of a value (.item(), .tolist(), a boolean mask, a repeat count, a
    Python if on a tensor) raises: what passes here never waits for a GPU inside a batch."""
    from virnucflow.models.esm2 import ESM2
    from virnucflow.models.esm2_encoder import Esm2Encoder

    with torch.device("meta"):
        model = ESM2(Esm2Config(LAYERS, DIM, HEADS), init=False)
    encoder = Esm2Encoder(model, "meta", device="meta", dtype=torch.bfloat16, attention=attention)
    prepared = encoder.prepare([tokenize(s) for s in SEQUENCES])
    rows = encoder.pooled(prepared)
    assert rows.device.type == "meta" and rows.shape == (len(SEQUENCES), DIM) and rows.dtype == torch.float32
