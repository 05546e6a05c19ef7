"""The SaShiMi playground: a Gradio app over sashimi_core (no tensor maths here).

    from playground.app import build_app, launch_options
    from playground.services import Settings
    settings = Settings.create()                       # public limits when SPACE_ID is set
    build_app(settings).launch(**launch_options(settings))

services.py (models, generation) and jobs.py (training / data set processes, run admin) do the work over
plain values; ui_*.py lay out the tabs and wire events; plots.py and audio_io.py are numpy/librosa helpers.
"""
