"""virnucflow: the VirNucPro viral-identification pipeline as a resumable Snakemake workflow."""

__version__ = "0.1.0"
