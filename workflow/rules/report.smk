# The report: report/report.html, one self-contained page (python -m adaloss report) stating the
# profile, data, scale, hardware and compute, and for each of the paper's claims whether this run
# reproduces it, computed from the tables (also written as results/tables/claims.csv).


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
    output:
        html="report/report.html",
        claims=f"{TABLES}/claims.csv",
    log:
        "logs/report/report.log",
    params:
        profile=config["profile"],
        configfiles=" ".join(map(str, workflow.configfiles)) or "(none)",
    shell:
        "python -m adaloss report --tables $(dirname {output.claims}) --figures {input.figures}"
        " --profile {params.profile} --configfiles {params.configfiles} --bench-dir results/bench"
        " --claims-out {output.claims} --out {output.html} > {log} 2>&1"
