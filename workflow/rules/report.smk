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
        args=" ".join(_flag(k, v) for k, v in sorted(config["bench"].items())),
    threads: max(1, config["bench"]["threads"])
    shell:
        "{ADALOSS} bench {params.args} --out {output} > {log} 2>&1"


rule study_report:
    input:
        tables=[
            *rules.anytime_errors.output,
            *rules.relative_to_opt.output,
            *rules.paper_relative_to_opt.output,
            *rules.small_vs_large.output,
            *rules.eann.output,
            *rules.adaloss_weights.output,
            *rules.weight_trajectories.output,
            *rules.runs_table.output,
        ],
        figures=get_figures(),
        bench=rules.speed_bench.output,
    output:
        html="report/report.html",
        claims=f"{TABLES}/claims.csv",
    log:
        "logs/report/report.log",
    params:
        profile=config["profile"],
        configfiles=" ".join(map(str, workflow.configfiles)) or "(none)",
        small=E3["small"],
        opt_model=E4["opt_model"],
        tolerance=E4["tolerance"],
    shell:
        "{ADALOSS} report --tables $(dirname {output.claims}) --figures {input.figures}"
        " --profile {params.profile} --configfiles {params.configfiles} --bench-dir $(dirname {input.bench})"
        " --small-model {params.small} --opt-model {params.opt_model} --eann-tolerance {params.tolerance}"
        " --claims-out {output.claims} --out {output.html} > {log} 2>&1"
