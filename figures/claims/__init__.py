"""The reproduction scoreboard (``tab-claims``): every claim of the four papers that the figures test, with the measured
effect and a verdict, computed from the figures' own runs and tidy functions."""
