"""Phase 3, language: instructions as goal commands (work in progress, issue 14).

grammar.py   instructions generated from templates and a vocabulary, with their commands;
             a train split and a held-out split of unseen paraphrases and words
"""
