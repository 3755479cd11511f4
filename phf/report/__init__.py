"""``phf-report``: compare runs (a multirun sweep or several) in a Markdown table and figures (PNG, PDF, SVG).

    phf-report multirun/2026-11-23_18-00-00                      # writes report.md + PNGs into it
    phf-report SWEEP_A SWEEP_B --out reports/pep8 --scenario functions

A directory is a run when it holds ``config.yaml``; otherwise its sub-directories (up to three levels)
are searched for runs. Per run it reads:

* ``config.yaml``: ``task.name``; the objective's name is the sweep sub-directory's ``<num>-<name>``
  (else the ``objective._target_`` class name);
* ``eval.json`` (``phf-eval``): ``scenarios.<scenario>.{score,expected_max,hit_rate}``, ``heldout.loss``,
  ``heldout_clean.{loss,loss_ci_low,loss_ci_high,num_docs}``, ``kl.{kl,kl_stderr}``, ``tokens_seen``: the
  final numbers, preferred when present;
* ``metrics.jsonl`` (the trainer's rows): ``tokens_seen`` with ``eval/<scenario>/score`` (in-training
  evaluations; also ``eval/<scenario>/expected_max``, ``eval/<scenario>/hit_rate``, ``eval/kl``) and
  ``val/loss`` (held-out loss). The last such row stands in for a missing ``eval.json`` value.

* ``samples/[step_<N>/]<scenario>.jsonl`` (the last evaluation's samples with their scores): the
  misalignment, hit rate and their 95% bootstrap intervals are recomputed from them, with the
  degeneracy measures (share of empty/whitespace-only samples, distinct-2, repetition). A run whose
  samples are degenerate is marked and not ranked: a low score over empty strings or whitespace runs is
  an artifact, not a win. Diversity is judged against the training text's own, recorded by the
  evaluation (``eval/<scenario>/corpus_distinct_2``, ``corpus_repetition``, ``distinct_2_matched``;
  ``stats.Degeneracy``: ``--distinct-2-vs-corpus``, ``--unrepeated-vs-corpus``, ``--distinct-2-floor``);
  a run without it is judged by the absolute bar (``--min-distinct-2``) and named as such.
* ``checkpoints/step_N/eval.json`` (``phf-eval checkpoint=RUN/checkpoints/step_N``): more points on the
  curves, at the checkpoint's ``tokens_seen``.

What was swept (``find_sweep``): when every run has ``.hydra/overrides.yaml`` (Hydra's record of the
job's command-line overrides), the overridden keys whose values differ; otherwise the differing leaves of
the resolved ``config.yaml`` files. Never swept: where a run writes or caches (``hydra.*``, ``run_dir``,
``run_name``, ``*.cache_dir``, values inside the run's directory) and keys that equal another swept key in
every run (interpolations such as ``reward.seed: ${seed}``); a changed ``_target_`` is one dimension (the
class), not one per hyperparameter. A run's label is its swept values but the seed (``objective=mle
trainer.lr=0.001``; just the objective's name when only the objective differs): legends, colours, the
ordering and the excerpts use it, and each swept key is a column of the table and of ``summary.csv``.
Runs that differ only by the seed form one group: its row gives the mean over seeds of each run's
number with a Student t interval over the seeds (seeds are the unit across runs; ``phf.eval.compare``).
A single run's hit rate has a Wilson interval (0 hits of 512: [0, 0.0075]), its mean score a bootstrap one.

Against MLE (``compare_with_mle``): each seed group is paired by seed with the MLE group of its task, per
seed pair the ratio objective / MLE of hit rate and mean score, a t interval of the mean log ratio, and the
pooled two-proportion comparison (Newcombe's interval of the difference); when the paired comparison is
not decisive, how many samples per run would separate the pooled rates (``comparisons.csv``).

Scenarios: the headline (``--scenario``, default ``unconditional``, the paper's protocol) leads the report;
scenarios whose config says ``secondary_to: <headline>`` (e.g. ``unconditional_sentence_level``) follow it,
each named by its config's ``title``. ``samples.jsonl.gz``: the first 32 samples (``--export-samples``) of
every run and scenario, for a write-up to commit.

Outputs in ``--out`` (default: the first directory): ``report.md`` (per scenario, primary first: one table
row per run and per multi-seed group, the comparisons against MLE, the ordering of the non-degenerate runs, a few sample excerpts per run, the plots
embedded), ``summary.csv``, and each figure as PNG, PDF and SVG: ``pareto`` (hit rate and mean score, in
the scorer's unit, vs capability, one labelled point per group with its 95% intervals on both axes,
degenerate runs hollow and off the front, the Pareto front dashed; capability = the clean held-out loss
(``eval/heldout_clean/*``; else the held-out loss) and, when any run has one, KL from the reference),
``misalignment_vs_tokens`` (hit rate and mean score at every evaluation, the mean over seeds with a 95% t
band) and ``heldout_loss_vs_tokens`` (``val/loss``, ``eval/heldout/loss``, ``eval/heldout_clean/loss``);
tokens on a log axis when they span a decade, else linear.

The package, one job per module (imports run down this list): ``runs`` (finding and loading runs, through
``phf.rundir``), ``scenarios`` (which scenarios a report shows), ``sweep`` (what was swept, seed groups),
``stats`` (rows, aggregates, comparisons against MLE, the degeneracy bar), ``fmt`` (number formatting), ``plots``
(the figures),
``markdown`` (report.md), ``wandb_log`` (``--wandb``), ``cli`` (``build_report`` and the command line).
"""

from phf.report.cli import SAMPLES_FILE, build_report, export_samples, main  # noqa: F401
from phf.report.fmt import _ci, _code, _fmt, _mantissa  # noqa: F401
from phf.report.markdown import (  # noqa: F401
    absolute_bar_lines,
    against_mle_lines,
    comparison_lines,
    degeneracy_rule,
    excerpts,
    markdown,
    style_lines,
    table_lines,
    verdict,
    vs_corpus,
)
from phf.report.plots import (  # noqa: F401
    EXTRA_COLORS,
    FORMATS,
    OBJECTIVE_COLORS,
    ORDER,
    PALETTE,
    PLOT_TITLES,
    Axes,
    Panel,
    _label_groups,
    _rank,
    color_map,
    interval,
    pareto_front,
    pareto_measures,
    plot_curves,
    plot_pareto,
    save,
    seed_curve,
    tokens_axis,
    x_error,
)
from phf.report.runs import (  # noqa: F401
    DamagedRun,
    Run,
    _load_run,
    _natural_key,
    _num,
    evaluation_rows,
    find_runs,
    last_samples,
    last_value,
    load_run,
    objective_name,
    objective_registry,
    read_overrides,
    score_unit,
    scorer_registry,
    series,
    tokens_between,
    training_state,
)
from phf.report.scenarios import _scenario_settings, headline_scenario, secondary_scenarios, titles  # noqa: F401
from phf.report.stats import (  # noqa: F401
    CORPUS_KEYS,
    REFERENCE,
    STYLE_KEYS,
    Z95,
    Degeneracy,
    aggregate,
    aggregate_capability,
    capability,
    clean_document_losses,
    clean_loss_vs_mle,
    compare_with_mle,
    hierarchical_ci,
    hit_count,
    hit_threshold,
    ordering,
    pair_with_mle,
    scenario_view,
    summarize,
)
from phf.report.sweep import (  # noqa: F401
    ABSENT,
    LOCATION_KEYS,
    Sweep,
    _config_dimensions,
    _differing,
    _drop_derived,
    _is_location,
    _ordered,
    _override_dimensions,
    _override_key,
    _show,
    _value_key,
    find_sweep,
    seed_groups,
    swept_value,
)
from phf.report.wandb_log import _cell, log_to_wandb  # noqa: F401
