"""Text in English and Chinese: language, words, negation, clinical labels."""
