"""The dashboard of the App server (contract §8): people sign in and see their tenant's calls only."""
