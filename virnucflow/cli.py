"""`virnucflow <stage>`: each workflow stage as a command, for one-off runs and debugging.

The Snakemake rules call the same functions with the same arguments through scripts/; option
defaults are the configuration's (virnucflow/config_schema.yaml). `snakemake` remains the way to
run the whole pipeline (see README.md and docs/).
"""

import argparse
import sys
from pathlib import Path

from . import __version__
from .jobs import job
from .schema import choices, defaults


def _prepare(args):
    from .prepare import prepare_sample

    with job("prepare", args.log):
        prepare_sample(args.reads, args.out_dir, sample=args.sample, chunk_length=args.chunk_length,
                       compat=args.compat, shard_residues=args.shard_residues)


def _embed(args):
    from .embed import embed_shard

    token_budget = args.token_budget or defaults()["embed"][f"{args.kind}_token_budget"]
    with job("embed", args.log):
        embed_shard(args.fasta, args.out, kind=args.kind, model=args.model, device=args.device,
                    precision=args.precision, token_budget=token_budget, on_error=args.on_error, layer=args.layer,
                    threads=args.threads, cpu_fallback=args.cpu_fallback, stats_json=args.stats,
                    lease_seconds=args.lock_lease_seconds)


def _merge(args):
    from .merge import merge_sample

    with job("merge", args.log):
        merge_sample(args.frames, args.dna, args.protein, args.out, validation_json=args.validation,
                     missing_ids_txt=args.missing, buffer_rows=args.buffer_rows, allow_missing=args.allow_missing,
                     chunk_length=args.chunk_length, compat=args.compat, dna_fasta=args.dna_fasta,
                     protein_fasta=args.protein_fasta, dtype=args.dtype)


def _export_pt(args):
    from .virnucpro_pt import export_virnucpro_pt

    with job("export-pt", args.log):
        export_virnucpro_pt(args.embeddings, args.out)


def _predict(args):
    from .predict import predict_sample

    with job("predict", args.log):
        predict_sample(args.embeddings, args.frames, args.reads, args.classifier,
                       predictions_tsv=args.predictions, chunk_calls_tsv=args.chunk_calls,
                       read_calls_tsv=args.read_calls, chunk_scores_tsv=args.chunk_scores,
                       chunk_length=args.chunk_length, max_ambiguous_fraction=args.max_ambiguous_fraction,
                       min_virus_score=args.min_virus_score)


def _demo_models(args):
    from .demo import write_demo_models

    with job("demo-models", args.log):
        write_demo_models(args.dnabert_s, args.esm2, args.classifier)


def _download_models(args):
    from .models.resolve import download_models

    with job("download-models", args.log):
        models = _configured_downloads(args.configfile) if isinstance(args.models, ConfigNames) else args.models
        download_models(models, classifier_url=args.classifier_url)


# The Snakefile's `configfile:`; --configfile files go on top of it, as with snakemake.
WORKFLOW_CONFIG = "config/config.yaml"


class ConfigNames(list):
    """download-models without names: what the config names. Equal to the schema's models (what a default
    config downloads besides the classifier); shown as what it means in --help."""

    def __repr__(self):
        return "the models and classifier the config names"


def _configured_downloads(configfiles):
    """The models a config names (local paths need no download), and `virnucpro` when it uses the published
    classifier: `configfiles` each on top of the one before (config/config.yaml skipped where it is not),
    on the schema's defaults."""
    import yaml

    from .errors import VirnucflowError
    from .models.published_classifiers import NAME
    from .models.resolve import is_local_path

    config = defaults()
    for file in configfiles:
        if file == WORKFLOW_CONFIG and not Path(file).is_file():
            continue
        try:
            _update(config, yaml.safe_load(Path(file).read_text()) or {})
        except (OSError, yaml.YAMLError) as error:
            reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
            raise VirnucflowError(f"{file}: cannot read the config ({reason}); give an existing YAML file to "
                                  "--configfile") from None
    models = [spec for spec in config["models"].values() if not is_local_path(spec)]
    return models + ([NAME] if config.get("classifier") == NAME else [])


def _update(config, changes):
    """Merge `changes` into `config`, nested keys by key (as snakemake layers config files)."""
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            _update(config[key], value)
        else:
            config[key] = value


def _sample_sheet(args):
    from .sample_sheet import write_sample_sheet

    with job("sample-sheet", args.log):
        write_sample_sheet(args.paths, args.out, force=args.force)


def _run_in_parts(args):
    from .parts import run_in_parts

    snakemake_args = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
    with job("run-in-parts", args.log):
        run_in_parts(args.samples, args.part_size, snakemake_args, folder=args.parts_dir)


def _prepare_arguments(p, config):
    p.add_argument("reads", nargs="+", metavar="READS",
                   help="reads: FASTA or FASTQ, plain or .gz; two files (R1 R2) for paired-end")
    p.add_argument("out_dir", help="folder for frames.tsv, reads.tsv, summary.json and shards/")
    p.add_argument("--sample", default="sample", help="sample name recorded in summary.json")
    p.add_argument("--chunk-length", type=int, default=config["chunk_length"], help="bp per chunk")
    p.add_argument("--compat", choices=choices("compat"), default=config["compat"],
                   help="virnucpro: VirNucPro's chunking and translation; fixed: full-length chunks (config/README.md)")
    p.add_argument("--shard-residues", type=int, default=config["shard_residues"], help="protein residues per shard")


def _embed_arguments(p, config):
    embed = config["embed"]
    p.add_argument("fasta", help="the shard FASTA: work/{sample}/shards/{i}.fna (dna) or .faa (protein)")
    p.add_argument("out", help="output HDF5")
    p.add_argument("--kind", choices=["dna", "protein"], required=True,
                   help="dna: DNABERT-S on nucleotides; protein: ESM-2 on amino acids")
    p.add_argument("--model", required=True, help="Hugging Face id, local folder or checkpoint file")
    p.add_argument("--device", default=embed["device"], help="auto (a free GPU if there is one), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=choices("embed", "precision"), default=embed["precision"],
                   help="auto: bf16 on a GPU, fp32 on the CPU")
    p.add_argument("--token-budget", type=int, default=None,
                   help="tokens, padding included, per batch (default: embed.dna_token_budget or "
                        f"embed.protein_token_budget, {embed['dna_token_budget']} / {embed['protein_token_budget']})")
    p.add_argument("--on-error", choices=choices("embed", "on_error"), default=embed["on_error"],
                   help="a sequence that cannot be embedded even alone: fail the job, or skip it and record its id")
    p.add_argument("--layer", type=int, default=embed["esm_layer"], help="ESM-2 layer to pool (None: the last)")
    p.add_argument("--threads", type=int, default=embed["threads"], help="CPU threads")
    p.add_argument("--cpu-fallback", action=argparse.BooleanOptionalAction, default=embed["cpu_fallback"],
                   help="compute on the CPU when this job has a GPU that torch cannot use (else an error)")
    p.add_argument("--stats", default=None, help="write sequences/tokens/seconds as JSON here (none without it)")
    p.add_argument("--lock-lease-seconds", type=float, default=embed["lock_lease_seconds"],
                   help="seconds between renewals of the lease on the output's sidecar (a job on another host "
                        "takes a lease over after 6 missed renewals; VIRNUCFLOW_LOCK_LEASE_SECONDS overrides)")


def _merge_arguments(p, config):
    merge = config["merge"]
    p.add_argument("frames", help="frames.tsv of the sample (the expected ids)")
    p.add_argument("out", help="output embeddings.h5")
    p.add_argument("--dna", nargs="+", required=True, help="DNA shard files in shard order (the i-th is shard i)")
    p.add_argument("--protein", nargs="+", required=True, help="protein shard files, in the same order")
    p.add_argument("--dna-fasta", nargs="+", default=None,
                   help="the shard FASTA (.fna) each DNA shard was computed from, in the same order: each shard's "
                        "recorded input sha256 is checked against it (not checked without it)")
    p.add_argument("--protein-fasta", nargs="+", default=None,
                   help="the shard FASTA (.faa) of each protein shard, in the same order (not checked without it)")
    p.add_argument("--validation", required=True, help="validation.json to write")
    p.add_argument("--missing", required=True, help="missing_ids.txt to write")
    p.add_argument("--chunk-length", type=int, required=True, help="chunk length of the prepare run (recorded)")
    p.add_argument("--compat", choices=choices("compat"), required=True, help="compat of the prepare run (recorded)")
    p.add_argument("--buffer-rows", type=int, default=merge["buffer_rows"], help="rows per read/write step")
    p.add_argument("--allow-missing", action=argparse.BooleanOptionalAction, default=merge["allow_missing"],
                   help="finish with the ids that exist and list the others in --missing")
    p.add_argument("--dtype", choices=choices("merge", "dtype"), default=merge["dtype"],
                   help="how the result stores its features: float32, or float16 in half the bytes (docs/disk-and-cost.md 'Disk use')")


def _export_pt_arguments(p, config):
    p.add_argument("embeddings", help="a merged results/{sample}/embeddings.h5")
    p.add_argument("out", help="the .pt file to write (VirNucPro's merged features)")


def _predict_arguments(p, config):
    p.add_argument("embeddings", help="the sample's merged embeddings.h5")
    p.add_argument("frames", help="the sample's work/{sample}/frames.tsv")
    p.add_argument("reads", help="the sample's work/{sample}/reads.tsv")
    p.add_argument("classifier", help="300_model.pth / 500_model.pth or a state_dict")
    p.add_argument("--predictions", required=True, help="predictions.tsv to write (one row per frame)")
    p.add_argument("--chunk-calls", required=True, help="chunk_calls.tsv to write (VirNucPro's call per chunk)")
    p.add_argument("--read-calls", required=True, help="read_calls.tsv to write (one call per read)")
    p.add_argument("--chunk-scores", help="also write chunk_scores.tsv here (each chunk's frames and max scores)")
    p.add_argument("--max-ambiguous-fraction", type=float, default=config["calls"]["max_ambiguous_fraction"],
                   help="reads with a larger fraction of N and other ambiguity codes are called `ambiguous` "
                        "(1 turns the rule off)")
    p.add_argument("--min-virus-score", type=float, default=config["calls"]["min_virus_score"],
                   help="a read is virus when its highest frame score2 (max_virus_score) is at least this, instead "
                        "of when any chunk is by VirNucPro's chunk rule (the chunk rule without it); "
                        "read_calls.tsv only")
    p.add_argument("--chunk-length", type=int, default=None,
                   help="chunk length of the run, checked against the classifier's (without it: as recorded in "
                        "the embeddings file)")


def _demo_models_arguments(p, config):
    p.add_argument("--dnabert-s", default="resources/demo_models/dnabert_s_tiny",
                   help="folder for the tiny DNABERT-S (published layout)")
    p.add_argument("--esm2", default="resources/demo_models/esm2_t2_tiny.pt",
                   help="file for the tiny ESM-2 (fair-esm checkpoint)")
    p.add_argument("--classifier", default="resources/demo_models/classifier_tiny.pth",
                   help="file for the tiny classifier (untrained)")


def _download_models_arguments(p, config):
    from .models.published_classifiers import BASE_URL

    p.add_argument("models", nargs="*", default=ConfigNames(config["models"].values()), metavar="MODEL",
                   help="Hugging Face ids, fair-esm names, or `virnucpro`: VirNucPro's 500_model.pth and 300_model.pth, "
                        "verified by their git blob ids, into $VIRNUCFLOW_CLASSIFIER_CACHE or "
                        "~/.cache/virnucflow/classifiers")
    p.add_argument("--configfile", action="append", default=[WORKFLOW_CONFIG], metavar="FILE",
                   help="without MODEL: the config whose models and classifier to fetch; each one given goes on top "
                        "of the ones before, as snakemake's --configfile (repeatable)")
    p.add_argument("--classifier-url", metavar="BASE", default=BASE_URL,
                   help="where 500_model.pth and 300_model.pth are fetched from (BASE/500_model.pth): a site mirror; "
                        "they are verified the same way")


def _sample_sheet_arguments(p, config):
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="reads files, or folders searched for them (hidden entries skipped); paths are written as "
                        "given, so give them relative to the folder snakemake runs in, or absolute")
    p.add_argument("-o", "--out", metavar="FILE", help="write the sheet here (stdout without it)")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def _run_in_parts_arguments(p, config):
    p.add_argument("--samples", required=True, help="the sample sheet to run (TSV, as `samples:` in the config)")
    p.add_argument("--part-size", type=int, default=50, help="samples per part")
    p.add_argument("--parts-dir", default="parts", help="folder for the part sheets and their .done records")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, metavar="-- SNAKEMAKE_ARGS",
                   help="everything after `--` is given to every snakemake run")


# (name, what it runs, its arguments, its help texts), in the order `virnucflow --help` lists them.
PARTS_DESCRIPTION = (
    "Cut the sample sheet into parts of --part-size samples (part sheets in --parts-dir), run snakemake on "
    "each part in turn with the arguments after `--` and --config samples=<part>, then once on the whole "
    "sheet (the report). Stops at the first failing part; the same command again skips the parts that "
    "finished. Example: virnucflow run-in-parts --samples config/samples.tsv -- --profile profiles/slurm")

SHEET_DESCRIPTION = (
    "Write a sample sheet (config/README.md, 'Sample sheet') for the reads under PATH: files whose content "
    "starts with > (FASTA) or @ (FASTQ), plain or gzip, whatever their names; other files are ignored and "
    "counted. R1 and R2 are paired by the usual names (_R1/_R2, _R1_001, .R1, _1/_2); the sample name is "
    "the file name without the tag and extension, other characters made _. A sample in several lanes or "
    "parts stops it, with the cat command that joins them. Example: virnucflow sample-sheet data/ "
    "-o config/samples.tsv")

# (name, what it runs, its arguments, its help texts), in the order `virnucflow --help` lists them.
COMMANDS = (
    ("prepare", _prepare, _prepare_arguments,
     dict(help="chunk reads, translate six frames, write frames.tsv and shards")),
    ("embed", _embed, _embed_arguments, dict(help="embed one shard FASTA with DNABERT-S (dna) or ESM-2 (protein)")),
    ("merge", _merge, _merge_arguments, dict(help="join DNA and protein shards by id into one validated HDF5")),
    ("export-pt", _export_pt, _export_pt_arguments,
     dict(help="write VirNucPro's merged .pt format from embeddings.h5")),
    ("predict", _predict, _predict_arguments, dict(help="VirNucPro calls per frame, chunk and read")),
    ("demo-models", _demo_models, _demo_models_arguments, dict(help="write the tiny UNTRAINED demo models")),
    ("download-models", _download_models, _download_models_arguments,
     dict(help="download the published models and VirNucPro's classifiers into the local caches")),
    ("sample-sheet", _sample_sheet, _sample_sheet_arguments,
     dict(help="write a sample sheet for the FASTA/FASTQ files under files and folders, R1 and R2 paired",
          description=SHEET_DESCRIPTION)),
    ("run-in-parts", _run_in_parts, _run_in_parts_arguments,
     dict(help="snakemake over a large sample sheet in parts, then once over the whole sheet",
          description=PARTS_DESCRIPTION)),
)


class DefaultsOnce(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, except a required option's and a None default (the help
    says in words what happens without the option)."""

    def _get_help_string(self, action):
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    config = defaults()
    parser = argparse.ArgumentParser(prog="virnucflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, run, arguments, texts in COMMANDS:
        sub = commands.add_parser(name, formatter_class=DefaultsOnce, **texts)
        arguments(sub, config)
        sub.add_argument("--log", default=None, help="also write the log to this file")
        sub.set_defaults(run=run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
