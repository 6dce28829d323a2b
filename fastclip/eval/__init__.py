"""fastclip-eval: evaluate every epoch of a CLIP training run.

The pieces, one job each:
- `suite`: suite files (TOML): datasets with their paths and benchmarks with their settings; built-in suites in
  fastclip/suites/ (paper, toyworld);
- `sources`: what a dataset type means: loaders (`datasets/`, `toyworld_sets`) -> evaluation sets (`evalsets`);
- `registry`: benchmarks registered by name (`benchmarks/`: zeroshot, noise_robustness, shape_bias, iqa, two_afc,
  saliency) with their settings;
- `context`: what one evaluation run shares (options, datasets decoded once and kept on the device) and one
  checkpoint's model and caches (zero-shot classifiers, image features shared between benchmarks);
- `features`, `distances`, `saliency_maps`, `zeroshot`, `preprocess`, `stats`: what the benchmarks compute with;
- `runner`: finds the epochs and runs what the results table lacks, one pass per checkpoint; --follow; torchrun
  (`distributed`); `hook`: the same in-process from fastclip-train --eval-every;
- `results`, `items`: the long results table (JSONL, CSV, Parquet), trials CSVs, per-item files;
- `figure`, `summary`, `report`: figure.png, the printed summary, `fastclip-eval report` (report.md);
- `cli`: `fastclip-eval` (`main(argv)`); `make_stimuli`: `fastclip-eval make-stimuli`; `errors`: InputError.
"""
