# The report: report/report.html, one self-contained page (python -m adaloss report) stating the
# profile, data, scale, hardware and compute, and for each of the paper's claims the paired per-seed
# statistic, its 95% interval and the verdict (adaloss.claims; also results/tables/claims.csv).


# Training speed (issue 4): our step against a plain PyTorch loop, measured in one job.
rule speed_bench:
    output:
        "results/bench/study.json",
    log:
        "logs/bench/study.log",
    params:
        args=cli_flags(config["bench"]),
    threads: max(1, config["bench"]["threads"])
    shell:
        "{ADALOSS} bench {params.args} --out {output} > {log} 2>&1"


rule study_report:
    input:
        tables=get_report_tables(),
        figures=get_figures(),
        bench=get_bench(),
    output:
        html="report/report.html",
        claims=f"{TABLES}/claims.csv",
    log:
        "logs/report/report.log",
    params:
        profile=config["profile"],
        configfiles=" ".join(map(str, workflow.configfiles)) or "(none)",
        experiments=PLAN.report_args(),
        bench=f"--bench-dir {os.path.dirname(rules.speed_bench.output[0])}" if PLAN.image_study else "",
    shell:
        "{ADALOSS} report --tables $(dirname {output.claims}) --figures {input.figures}"
        " --profile {params.profile} --configfiles {params.configfiles} {params.bench}"
        " {params.experiments}"
        " --claims-out {output.claims} --out {output.html} > {log} 2>&1"
