"""CITATION.cff and README's "Citing" name the same works: VirNucPro, DNABERT-S, ESM-2 and Snakemake."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_citation_cff_and_readme_cite_the_same_works():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["title"].startswith("virnucflow")
    titles = [ref["title"] for ref in cff["references"]]
    assert [t.split(":")[0] for t in titles] == ["VirNucPro", "DNABERT-S",
                                                  "Evolutionary-scale prediction of atomic-level protein structure "
                                                  "with a language model", "Sustainable data analysis with Snakemake"]
    readme = (REPO / "README.md").read_text()
    citing = readme[readme.index("\n## Citing\n"):].split("\n## ", 2)[1]
    for ref in cff["references"]:
        for key in ("doi", "url", "repository-code"):
            if key in ref:
                assert ref[key].removeprefix("https://arxiv.org/abs/") in citing, (key, ref[key])
    for name in ("VirNucPro", "DNABERT-S", "ESM-2", "Snakemake"):
        assert f"**{name}**" in citing
