//! CloudEvents SQL (CESQL) v1.0.0: lexer, parser, compiler and evaluator.
