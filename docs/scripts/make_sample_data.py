"""Regenerate the bundled sample data (src/napari_amodal/sample_data) from fixed seeds."""

from napari_amodal.data.sample import write_sample_data

if __name__ == "__main__":
    for p in write_sample_data():
        print(f"{p}  {p.stat().st_size / 1e6:.2f} MB")
