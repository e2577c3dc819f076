# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`promptkd demo`: PromptKD as a miniature of the paper, offline on a CPU.

The pieces, in the order the demo uses them:

- [`corpus.english_corpus`]: English prose that ships with Python, plus generated sentences (pretraining data);
- [`tasks.make_dataset`]: seeded synthetic instruction-following tasks with checkable references;
- [`tokenizer.train_tokenizer`]: byte-level BPE trained locally on both;
- [`models.build_model`]: random-init Llama (default) or GPT-2 teacher/student sharing the vocabulary;
- [`training.train_causal_lm`]: pretraining on packed text, then SFT (teacher; the student's initialisation);
- [`run.run_demo`]: five methods from the same SFT student, evaluated with [`promptkd_trainer.evaluation`];
- [`defaults.DemoConfig`]: every setting and its default.
"""
