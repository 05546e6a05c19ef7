"""Start the SaShiMi playground: python app.py [--host H] [--port P] [--public] [--share] [--teacher-password-file F].

The Listen tab's teacher password comes from the environment (SASHIMI_TEACHER_PASSWORD) or a file, never from
the command line, where every user of the machine could read it in `ps`."""
import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

from playground.app import build_app, launch_options  # noqa: E402
from playground.listening.config import read_password_file  # noqa: E402
from playground.services import Settings  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    on_space = bool(os.environ.get("SPACE_ID"))
    ap.add_argument("--host", default="0.0.0.0" if on_space else "127.0.0.1")
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    ap.add_argument("--public", action="store_true", help="public limits (automatic when SPACE_ID is set)")
    ap.add_argument("--share", action="store_true", help="also open a gradio.live share link")
    ap.add_argument("--teacher-password-file", default=None, metavar="FILE",
                    help="file whose first line is the Listen tab's teacher password (or set the environment "
                    "variable SASHIMI_TEACHER_PASSWORD)")
    args = ap.parse_args()
    if args.teacher_password_file:
        os.environ["SASHIMI_TEACHER_PASSWORD"] = read_password_file(args.teacher_password_file)
    settings = Settings.create(public=args.public or on_space)
    build_app(settings).launch(**launch_options(settings, args.host, args.port, args.share))
