"""Train the original model (the papers' INIT): <save_dir>/checkpoint.pt and eval_result.json.

The program is commands/baseline.py; its flags: python main_baseline.py --help."""
from commands.baseline import main

if __name__ == "__main__":
    main()
