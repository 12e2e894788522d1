"""Running a `KernelPlan`: kernel launches with keyword arguments (`launch`) and the autograd
Function (`autograd`)."""
