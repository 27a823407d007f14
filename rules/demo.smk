# Tiny random-weight models in the published on-disk layouts, for `make demo` and the tests
# (config/demo.yaml names these paths; the embed and predict rules take any model file as input).
# They are UNTRAINED: their embeddings and calls mean nothing biologically.


localrules:
    demo_models,


rule demo_models:
    output:
        dnabert_s=directory("resources/demo_models/dnabert_s_tiny"),
        esm2="resources/demo_models/esm2_t2_tiny.pt",
        classifier="resources/demo_models/classifier_tiny.pth",
    log:
        "logs/demo_models.log",
    conda:
        "../envs/virnucflow.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/demo_models.py"
