"""napari integration: reader, writer, sample data, widgets. The only code that touches napari/Qt."""
