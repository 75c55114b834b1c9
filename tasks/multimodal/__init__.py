"""Task `multimodal`: the gradient-blended multimodal Cox network (MRI + slides + clinical).

- model.py: `MultimodalCoxNet` (sub-networks in stsfl.common: mri_net, wsi_net, clinical_net);
- site.py: a site's prepared patients, local training, evaluation and site documents (`MultimodalSite`);
- server.py: schema, statistics, initial weights and federated blending (`MultimodalServer`).
"""
