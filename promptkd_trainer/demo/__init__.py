# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`promptkd demo`: does PromptKD's prompt give a better student? A miniature of the paper, offline on a CPU.

The pieces, in the order the demo uses them:

- [`corpus.english_corpus`]: English prose that ships with Python, plus generated sentences (pretraining data);
- [`tasks.make_dataset`]: seeded synthetic tasks with several good wordings per answer and a checkable `answer`;
- [`answers.answer_correct`]: answer accuracy, the content of an answer compared with the truth;
- [`tokenizer.train_tokenizer`], [`models.build_model`], [`training.train_causal_lm`]: a byte-level BPE tokenizer,
  a Llama teacher and student, pretraining then SFT;
- [`build.build_models`]: the package's pre-built models (`prebuilt/`), or models built and cached for other settings;
- [`methods.train_method`]: five methods (and PromptKD's ablations) from the same SFT student under one protocol;
- [`scoring.score_model`], [`results`]: the scores and the typed results, with paired intervals;
- [`run.run_demo`], [`report`]: the run, `results.json`, `report.md` and plots;
- [`defaults.DemoConfig`]: every setting and its default.
"""
