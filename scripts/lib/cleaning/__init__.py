"""The prompt cleaner (docs/cleaning.md): a rule set, parsed once into `CleanRules`, compiled into
`Rules`, then text in -> text out.

    rules = load_rules(load_rule_set("2023-04-04"))        # or compile_rules(rule_set_from_file(path, name))
    text, reason = clean_text(prompt, rules)               # (text, None) or (None, the rule that dropped it)
    kept, dropped = clean_table(df, rules, column="prompt", mode="rewrite")

rule_sets: the forms a rule set arrives in; compiler: CleanRules -> Rules; drop_rules: the named drop
tests; text: one prompt; table: tables and the local engine; on_ray: the Ray engine.
"""

from scripts.lib.cleaning.compiler import compile_rules
from scripts.lib.cleaning.drop_rules import DROP_POINTS, DROP_RULES
from scripts.lib.cleaning.rule_sets import (
    MODES,
    all_rule_sets,
    load_rule_set,
    load_rules,
    read_rules_file,
    resolve,
    rule_set_from_file,
    rules_file_document,
    source_choice,
)
from scripts.lib.cleaning.rules import DropRule, Rules
from scripts.lib.cleaning.table import clean_table, pass_through, report, split_rows
from scripts.lib.cleaning.text import EMPTY, EMPTY_AFTER_CLEAN, clean_text

__all__ = [
    "DROP_POINTS",
    "DROP_RULES",
    "EMPTY",
    "EMPTY_AFTER_CLEAN",
    "MODES",
    "DropRule",
    "Rules",
    "all_rule_sets",
    "clean_table",
    "clean_text",
    "compile_rules",
    "load_rule_set",
    "load_rules",
    "pass_through",
    "read_rules_file",
    "report",
    "resolve",
    "rule_set_from_file",
    "rules_file_document",
    "source_choice",
    "split_rows",
]
