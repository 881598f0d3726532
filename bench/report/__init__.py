"""The reporter: a sweep's trials -> leaderboards, late fusion, significance, published results.

- `bench.report.trials`: one polars table of trials, from MLflow (`bench.report.store`) or from
  Ray Tune's storage, and which trial counts per configuration and seed.
- `bench.report.stats`: hierarchical bootstrap (seeds, then clips) intervals inside [0, 100], differences between architectures with P(improvement), Holm over a report's comparisons; McNemar and the paired bootstrap per trained model.
- `bench.report.fusion`: late fusion of modalities from per-sample scores (mean, product,
  cross-fitted weights).
- `bench.report.baselines`: the published results (``resources/baselines.csv``).
- `bench.report.build`: every table of the report; `bench.report.plots` / `render`: figures,
  Markdown, self-contained HTML; `bench.report.store`: the leaderboard run in MLflow.
- `bench.report.ui`: ``bench ui`` (the MLflow UI); `bench.report.viz`: ``bench viz`` (Fig. 3).
- `bench.report.cli`: the commands; `report_sweep` is ``bench report`` as a function.

Nothing is imported here, so ``bench --help`` stays fast.
"""
