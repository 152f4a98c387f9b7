"""tidegate.demo"""
