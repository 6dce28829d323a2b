"""fastclip-train: open_clip-compatible CLIP training (config, distributed set-up, loop, schedule, loss, CLI).

`fastclip.train.cli.main(argv)` is the console script; `fastclip.train.cli.train(config)` runs a job in-process.
"""
