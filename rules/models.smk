# Tiny random-weight models in the published on-disk layouts, for `make demo` and the tests.
# They are UNTRAINED: their embeddings and calls mean nothing biologically.


rule demo_models:
    output:
        dnabert_s=directory(DEMO_MODELS["dnabert_s"]),
        esm2=DEMO_MODELS["esm2"],
        classifier=DEMO_MODELS["classifier"],
    log:
        "logs/demo_models.log",
    conda:
        "../envs/virnucflow.yaml"
    script:
        "../scripts/demo_models.py"
