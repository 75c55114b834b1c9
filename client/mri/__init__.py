"""MRI inputs: reading T1, T2 and mask with SimpleITK, preprocessing to tumour crops, augmentation."""
