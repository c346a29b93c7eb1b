"""The sans-IO decision core: FHIR reading, terminology, facts, the condition vocabulary, rules, engine, cards and the decision; no Flask, no network, no database."""
