"""tidegate.k8s"""
