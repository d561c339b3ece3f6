"""Research analytics (issue 14): the statistics researchers publish, and the A/B study machinery.

Pure, Ray-free and database-free modules; the routes and SQL that feed them live in app/services and
app/api. Every statistic is checked against a reference library in tests/unit.
"""
