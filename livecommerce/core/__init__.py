"""Foundation: the error tree, configuration, JSON logs, and the pure data model of a sale.

Imports nothing else of livecommerce; every other part may import it.
"""
