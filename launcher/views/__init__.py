"""The read side of the experiment manager: list, status text, compare, plot, TensorBoard, follow, estimates."""
