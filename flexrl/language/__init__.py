"""Phase 3, language: instructions as goal commands (issue 14, in progress).

grammar.py   instructions generated from templates and a vocabulary, with their commands;
             a train split and a held-out split of unseen paraphrases and words
encoder.py   all-MiniLM-L6-v2 sentence embeddings, offline from its wheel, cached
parser.py    instruction -> command [vx, vy, yaw_rate] and a confidence; out-of-domain refusal
"""
