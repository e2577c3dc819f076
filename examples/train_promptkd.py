# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""`promptkd train` as a script file, for launchers that want a path rather than a module.

Same flags and YAML configs as `promptkd train` (`promptkd_trainer.cli.run_train`): TRL's `ScriptArguments` and
`ModelConfig` (`--dataset_test_split`, `--dtype`, `--use_peft --lora_r ...`) plus the `PromptKDConfig` fields:

```bash
python examples/train_promptkd.py --config examples/gpt2/gpt2-base.yaml
accelerate launch --config_file promptkd_trainer/configs/accelerate/deepspeed_zero1.yaml \
    examples/train_promptkd.py --config examples/gpt2/gpt2-base.yaml
deepspeed --num_gpus 8 examples/train_promptkd.py --config examples/gpt2/gpt2-base.yaml \
    --deepspeed promptkd_trainer/configs/deepspeed/zero1.json
```

`accelerate launch ... -m promptkd_trainer train --config ...` and `torchrun ... -m promptkd_trainer train ...` do the
same without this file.
"""

import sys

from promptkd_trainer.cli import run_train


if __name__ == "__main__":
    run_train(sys.argv[1:])
