"""app/services"""
