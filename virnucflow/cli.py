"""`virnucflow <stage>`: each workflow stage as a command, for one-off runs and debugging.

The Snakemake rules call the same functions through scripts/; `snakemake` remains the way to run
the whole pipeline (see README).
"""

import argparse
import sys

from .jobs import job


def _prepare(args):
    from .prepare import prepare_sample

    with job("prepare", args.log) as log:
        prepare_sample(args.fasta, args.out_dir, sample=args.sample, chunk_length=args.chunk_length,
                       compat=args.compat, shard_residues=args.shard_residues, log=log)


def _embed(args):
    from .embed import embed_shard

    with job("embed", args.log) as log:
        embed_shard(args.fasta, args.out, kind=args.kind, model=args.model, device=args.device,
                    precision=args.precision, token_budget=args.token_budget, on_error=args.on_error,
                    layer=args.layer, threads=args.threads, cpu_fallback=args.cpu_fallback, stats_json=args.stats,
                    log=log)


def _merge(args):
    from .merge import merge_sample

    with job("merge", args.log) as log:
        merge_sample(args.frames, args.dna, args.protein, args.out, validation_json=args.validation,
                     missing_ids_txt=args.missing, chunk_rows=args.chunk_rows,
                     allow_missing=args.allow_missing, log=log)


def _export_pt(args):
    from .merge import export_virnucpro_pt

    with job("export-pt", args.log):
        export_virnucpro_pt(args.embeddings, args.out)


def _predict(args):
    from .predict import predict_sample

    with job("predict", args.log) as log:
        predict_sample(args.embeddings, args.frames, args.reads, args.classifier,
                       predictions_tsv=args.predictions, chunk_calls_tsv=args.chunk_calls,
                       read_calls_tsv=args.read_calls, chunk_length=args.chunk_length, log=log)


def _demo_models(args):
    from .demo import write_demo_models

    with job("demo-models", args.log) as log:
        write_demo_models(args.dnabert_s, args.esm2, args.classifier, log=log)


def _download_models(args):
    from .models.resolve import download_models

    with job("download-models", args.log) as log:
        download_models(args.models, log=log)


def build_parser():
    parser = argparse.ArgumentParser(prog="virnucflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("prepare", help="chunk reads, translate six frames, write frames.tsv and shards")
    p.add_argument("fasta", help="reads, FASTA or FASTA.gz")
    p.add_argument("out_dir", help="folder for frames.tsv, reads.tsv, summary.json and shards/")
    p.add_argument("--sample", default="sample")
    p.add_argument("--chunk-length", type=int, default=500)
    p.add_argument("--compat", choices=["virnucpro", "fixed"], default="virnucpro")
    p.add_argument("--shard-residues", type=int, default=10_000_000)
    p.set_defaults(run=_prepare)

    p = commands.add_parser("embed", help="embed one shard FASTA with DNABERT-S (dna) or ESM-2 (protein)")
    p.add_argument("fasta")
    p.add_argument("out", help="output HDF5")
    p.add_argument("--kind", choices=["dna", "protein"], required=True)
    p.add_argument("--model", required=True, help="Hugging Face id, local folder or checkpoint file")
    p.add_argument("--device", default="auto", help="auto (a free GPU if there is one), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--token-budget", type=int, default=65536)
    p.add_argument("--on-error", default="fail", choices=["fail", "skip"])
    p.add_argument("--layer", type=int, default=None, help="ESM-2 layer (default: last)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: one per core)")
    p.add_argument("--cpu-fallback", action="store_true",
                   help="compute on the CPU when this job has a GPU that torch cannot use (default: an error)")
    p.add_argument("--stats", default=None, help="write sequences/tokens/seconds as JSON here")
    p.set_defaults(run=_embed)

    p = commands.add_parser("merge", help="join DNA and protein shards by id into one validated HDF5")
    p.add_argument("frames", help="frames.tsv of the sample (the expected ids)")
    p.add_argument("out", help="output embeddings.h5")
    p.add_argument("--dna", nargs="+", required=True)
    p.add_argument("--protein", nargs="+", required=True)
    p.add_argument("--validation", required=True, help="validation.json to write")
    p.add_argument("--missing", required=True, help="missing_ids.txt to write")
    p.add_argument("--chunk-rows", type=int, default=10_000)
    p.add_argument("--allow-missing", action="store_true")
    p.set_defaults(run=_merge)

    p = commands.add_parser("export-pt", help="write VirNucPro's merged .pt format from embeddings.h5")
    p.add_argument("embeddings")
    p.add_argument("out")
    p.set_defaults(run=_export_pt)

    p = commands.add_parser("predict", help="VirNucPro calls per frame, chunk and read")
    p.add_argument("embeddings")
    p.add_argument("frames")
    p.add_argument("reads")
    p.add_argument("classifier", help="300_model.pth / 500_model.pth or a state_dict")
    p.add_argument("--predictions", required=True)
    p.add_argument("--chunk-calls", required=True)
    p.add_argument("--read-calls", required=True)
    p.add_argument("--chunk-length", type=int, default=None)
    p.set_defaults(run=_predict)

    p = commands.add_parser("demo-models", help="write the tiny UNTRAINED demo models")
    p.add_argument("--dnabert-s", default="resources/demo_models/dnabert_s_tiny")
    p.add_argument("--esm2", default="resources/demo_models/esm2_t2_tiny.pt")
    p.add_argument("--classifier", default="resources/demo_models/classifier_tiny.pth")
    p.set_defaults(run=_demo_models)

    p = commands.add_parser("download-models", help="download published models into the local caches")
    p.add_argument("models", nargs="*", default=["zhihan1996/DNABERT-S", "facebook/esm2_t36_3B_UR50D"])
    p.set_defaults(run=_download_models)

    for sub in commands.choices.values():
        sub.add_argument("--log", default=None, help="also write the log to this file")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
