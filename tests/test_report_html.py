"""`snakemake --report` on a finished demo run: the HTML report says what was run and how it was validated."""

import subprocess
import sys
import zipfile

from conftest import run_snakemake


def test_the_html_report_tells_how_the_samples_were_validated(demo_workdir):
    (demo_workdir / "config/partial.yaml").write_text("merge:\n  allow_missing: true\n")
    run_snakemake(demo_workdir, config={"merge": {"allow_missing": True}})
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "config/demo.yaml",
                           "config/partial.yaml", "--report", "report.zip"],
                          cwd=demo_workdir, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with zipfile.ZipFile(demo_workdir / "report.zip") as bundle:
        text = "\n".join(bundle.read(name).decode("utf-8", "replace") for name in bundle.namelist()
                         if name.endswith((".html", ".js", ".rst")))
    assert "merge.allow_missing: true" in text and "Every sample was validated" not in text
    assert "read_calls.tsv" in text  # each sample's read calls are in the report
    assert "UNTRAINED MODELS: the embeddings of coding, mixed were computed with random-weight models" in text
