"""`medge ultrasound`: live lesion segmentation of an ultrasound feed with a browser view and per-stage latency."""

from __future__ import annotations

import argparse

from medge.commands.common_args import add_view_security_arguments, view_security_from_args

HELP = "run a segmenter bundle on a live or recorded ultrasound feed (video, camera, DICOM cine, frames, synthetic)"
EXAMPLE = "medge ultrasound --segmenter build/us --screen build/us-screen --source cine.dcm --view browser --report us.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("--segmenter", required=True, metavar="BUNDLE",
                        help="segmentation bundle folder or artifact (.onnx/.xml/.tflite) with medge metadata")
    parser.add_argument("--screen", metavar="BUNDLE", help="frame pre-screen classifier: frames below its threshold skip segmentation")
    parser.add_argument("--screen-threshold", type=float, metavar="P",
                        help="pre-screen threshold (default: from the model metadata, else 0.5)")
    parser.add_argument("--source", required=True, metavar="SRC",
                        help="video file or stream URL (http://, rtsp://, udp://…), folder of PNG/JPEG frames, DICOM file, "
                             "/dev/videoN, camera:N or synthetic[:FPS[:WxH]]")
    parser.add_argument("--view", default="browser", metavar="browser[:HOST:PORT]|window|none",
                        help="where to show the overlay (default browser on 127.0.0.1:8080)")
    parser.add_argument("--view-size", metavar="WxH",
                        help="size of the overlay in the view, the recording and the window (default: the frame's, "
                             "halved until it fits 1280x720, e.g. 960x540 for 1080p); the analysis keeps the frame's")
    add_view_security_arguments(parser)
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="realtime", action="store_true", default=True,
                      help="pace file sources at their own frame rate; late frames are dropped and counted (default)")
    pace.add_argument("--as-fast-as-possible", dest="realtime", action="store_false",
                      help="no pacing, lossless: every frame is processed and the fps is the pipeline's throughput")
    parser.add_argument("--frames", type=int, metavar="N", help="stop after N source frames")
    parser.add_argument("--record", metavar="OUT.mp4", help="write the overlaid video (atomically) to OUT.mp4 or .avi")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="inference threads per model (default: half the CPU cores, at least 1)")
    parser.add_argument("--rt-priority", type=int, metavar="N",
                        help="run the capture, decode and stage threads SCHED_FIFO at priority N (1-99), so that no "
                             "other thread preempts a frame in flight: steadier latency and no drops on a busy "
                             "device (needs `ulimit -r N`, LimitRTPRIO=N or CAP_SYS_NICE; paced or live sources only)")
    parser.add_argument("--device", help="runtime device (default: the bundle's)")
    parser.add_argument("--fps", type=float, help="frame rate of a folder of frames (default 30), or the rate to ask a camera for")
    parser.add_argument("--mm-per-px", type=float, metavar="MM", help="pixel size for video/camera sources (DICOM files carry their own)")
    parser.add_argument("--camera-size", metavar="WxH", help="capture size to ask the camera for, e.g. 1920x1080")
    parser.add_argument("--camera-format", metavar="MJPG|YUYV",
                        help="camera pixel format: MJPG (1080p60 on most capture cards) or YUYV (uncompressed)")
    parser.add_argument("--input-size", metavar="HxW", help="model input size for artifacts with dynamic spatial dimensions")
    parser.add_argument("--mask-threshold", type=float, default=0.5, help="probability above which a pixel is lesion (default 0.5)")
    parser.add_argument("--min-lesion-area", metavar="AREA",
                        help="smaller regions are not a lesion: in px or mm², e.g. 25px or 7mm2 (default 7mm2 on a "
                             "calibrated source, else 25px)")
    parser.add_argument("--linger", type=float, default=0.0, metavar="S",
                        help="keep the browser view open S seconds after a file source ends, with its last frame and "
                             "summary (default 0; Ctrl-C ends it earlier)")
    parser.add_argument("--stall-timeout", type=float, default=1.0, metavar="S",
                        help="a live source (camera, stream) silent this long shows 'no signal' and is counted as a stall "
                             "(default 1 s); a lost one is reopened with backoff")
    parser.add_argument("--warmup", type=int, default=5, metavar="N", help="frames left out of the latency stats (default 5)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.apps.ultrasound.app import UltrasoundConfig, run_ultrasound
    from medge.apps.ultrasound.sources import parse_size
    from medge.common.errors import UsageError

    input_size = None
    if args.input_size:
        w, h = parse_size(args.input_size, "--input-size")
        input_size = (w, h)  # HxW as typed: first number is the height
    if args.camera_format:
        from medge.apps.ultrasound.camera import parse_camera_format

        parse_camera_format(args.camera_format)  # before any device is opened
    if args.fps is not None and not args.fps > 0:
        raise UsageError(f"--fps must be > 0 (got {args.fps})")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {args.threads})")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be ≥ 0 (got {args.warmup})")
    if not args.linger >= 0:
        raise UsageError(f"--linger must be ≥ 0 seconds (got {args.linger})")
    if not 0.0 < args.mask_threshold < 1.0:
        raise UsageError(f"--mask-threshold must be in (0, 1) (got {args.mask_threshold})")
    from medge.common.registry import import_optional

    import_optional("cv2", what="the ultrasound app")  # one line before anything starts, not a thread's traceback
    config = UltrasoundConfig(
        segmenter=args.segmenter, source=args.source, screen=args.screen, screen_threshold=args.screen_threshold,
        view=args.view, realtime=args.realtime, frames=args.frames, record=args.record, threads=args.threads,
        device=args.device, fps=args.fps, mm_per_px=args.mm_per_px,
        camera_size=parse_size(args.camera_size, "--camera-size") if args.camera_size else None,
        camera_format=args.camera_format, input_size=input_size,
        view_size=parse_size(args.view_size, "--view-size") if args.view_size else None, mask_threshold=args.mask_threshold,
        warmup=args.warmup, progress=not args.quiet, stall_timeout=args.stall_timeout, view_security=view_security_from_args(args),
        min_lesion_area=args.min_lesion_area, linger_s=args.linger, rt_priority=args.rt_priority,
    )
    return run_ultrasound(config)
