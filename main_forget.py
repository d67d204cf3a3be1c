"""Unlearn the forget set from a trained model with one method (optionally masked), then evaluate.

The program is commands/forget.py; its flags: python main_forget.py --help."""
from commands.forget import main

if __name__ == "__main__":
    main()
