"""Trojan cleanse: poison training examples with a trigger patch, train, unlearn them, compare attack success.

The program is commands/backdoor.py; its flags: python main_backdoor.py --help."""
from commands.backdoor import main

if __name__ == "__main__":
    main()
