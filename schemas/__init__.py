"""The table contracts: what every vidlake table is, and the rules that make ids stable."""
