"""Prune a model (OMP one-shot, IMP iterative, with weight rewinding) or compute saliency masks (SalUn).

The program is commands/imp.py; its flags: python main_imp.py --help."""
from commands.imp import main

if __name__ == "__main__":
    main()
