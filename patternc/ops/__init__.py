"""Running a `KernelPlan`: kernel launches with keyword arguments (`launch`) and the custom
operators with their autograd and fake implementations (`op`)."""
