"""The generated default corpus: eSpeak NG speech over a small English grammar."""
