"""Ultrasound streaming app: live lesion segmentation from video, camera, DICOM cine or synthetic frames."""
