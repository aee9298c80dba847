"""Tests for assocjax.rois: tiny annot / label.gii / NIfTI atlases written here, group masks,
and the subject bootstrap checked against plain NumPy."""
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.gifti import GiftiDataArray, GiftiImage, GiftiLabel, GiftiLabelTable

from assocjax import results, rois, stats

# FreeSurferColorLUT.txt entries 11100-11175 (ctx_lh_ prefix removed): the label names of
# FreeSurfer's aparc.a2009s (Destrieux 2009) annot, in colour-table order. nilearn ships no
# offline copy (its fetcher downloads the annots), so the list is written out here.
DESTRIEUX = """Unknown G_and_S_frontomargin G_and_S_occipital_inf G_and_S_paracentral G_and_S_subcentral
G_and_S_transv_frontopol G_and_S_cingul-Ant G_and_S_cingul-Mid-Ant G_and_S_cingul-Mid-Post G_cingul-Post-dorsal
G_cingul-Post-ventral G_cuneus G_front_inf-Opercular G_front_inf-Orbital G_front_inf-Triangul G_front_middle
G_front_sup G_Ins_lg_and_S_cent_ins G_insular_short G_occipital_middle G_occipital_sup G_oc-temp_lat-fusifor
G_oc-temp_med-Lingual G_oc-temp_med-Parahip G_orbital G_pariet_inf-Angular G_pariet_inf-Supramar G_parietal_sup
G_postcentral G_precentral G_precuneus G_rectus G_subcallosal G_temp_sup-G_T_transv G_temp_sup-Lateral
G_temp_sup-Plan_polar G_temp_sup-Plan_tempo G_temporal_inf G_temporal_middle Lat_Fis-ant-Horizont
Lat_Fis-ant-Vertical Lat_Fis-post Medial_wall Pole_occipital Pole_temporal S_calcarine S_central S_cingul-Marginalis
S_circular_insula_ant S_circular_insula_inf S_circular_insula_sup S_collat_transv_ant S_collat_transv_post S_front_inf
S_front_middle S_front_sup S_interm_prim-Jensen S_intrapariet_and_P_trans S_oc_middle_and_Lunatus
S_oc_sup_and_transversal S_occipital_ant S_oc-temp_lat S_oc-temp_med_and_Lingual S_orbital_lateral
S_orbital_med-olfact S_orbital-H_Shaped S_parieto_occipital S_pericallosal S_postcentral S_precentral-inf-part
S_precentral-sup-part S_suborbital S_subparietal S_temporal_inf S_temporal_sup S_temporal_transverse""".split()

# FSL's HarvardOxford-Cortical.xml labels (image value = index + 1), nilearn's order after "Background".
HO_CORTICAL = [
    "Frontal Pole", "Insular Cortex", "Superior Frontal Gyrus", "Middle Frontal Gyrus",
    "Inferior Frontal Gyrus, pars triangularis", "Inferior Frontal Gyrus, pars opercularis", "Precentral Gyrus",
    "Temporal Pole", "Superior Temporal Gyrus, anterior division", "Superior Temporal Gyrus, posterior division",
    "Middle Temporal Gyrus, anterior division", "Middle Temporal Gyrus, posterior division",
    "Middle Temporal Gyrus, temporooccipital part", "Inferior Temporal Gyrus, anterior division",
    "Inferior Temporal Gyrus, posterior division", "Inferior Temporal Gyrus, temporooccipital part",
    "Postcentral Gyrus", "Superior Parietal Lobule", "Supramarginal Gyrus, anterior division",
    "Supramarginal Gyrus, posterior division", "Angular Gyrus", "Lateral Occipital Cortex, superior division",
    "Lateral Occipital Cortex, inferior division", "Intracalcarine Cortex", "Frontal Medial Cortex",
    "Juxtapositional Lobule Cortex (formerly Supplementary Motor Cortex)", "Subcallosal Cortex",
    "Paracingulate Gyrus", "Cingulate Gyrus, anterior division", "Cingulate Gyrus, posterior division",
    "Precuneous Cortex", "Cuneal Cortex", "Frontal Orbital Cortex", "Parahippocampal Gyrus, anterior division",
    "Parahippocampal Gyrus, posterior division", "Lingual Gyrus", "Temporal Fusiform Cortex, anterior division",
    "Temporal Fusiform Cortex, posterior division", "Temporal Occipital Fusiform Cortex", "Occipital Fusiform Gyrus",
    "Frontal Operculum Cortex", "Central Opercular Cortex", "Parietal Operculum Cortex", "Planum Polare",
    "Heschl's Gyrus (includes H1 and H2)", "Planum Temporale", "Supracalcarine Cortex", "Occipital Pole"]

# Glasser et al. 2016 HCP-MMP1.0: its 180 areas (each L_<name>_ROI / R_<name>_ROI in the release)
# by the 22 sections of its supplementary neuroanatomical results.
HCP_SECTIONS = {
    "primary_visual": "V1", "early_visual": "V2 V3 V4", "dorsal_visual": "V3A V3B V6 V6A V7 IPS1",
    "ventral_visual": "V8 VVC PIT FFC VMV1 VMV2 VMV3", "mt_complex": "V3CD LO1 LO2 LO3 V4t FST MT MST PH",
    "somatomotor": "4 3a 3b 1 2", "paracentral_midcingulate": "24dd 24dv 6mp 6ma SCEF 5m 5L 5mv",
    "premotor": "55b 6d 6a FEF 6v 6r PEF", "posterior_opercular": "43 FOP1 OP4 OP1 OP2-3 PFcm",
    "early_auditory": "A1 LBelt MBelt PBelt RI", "auditory_association": "A4 A5 STSdp STSda STSvp STSva STGa TA2",
    "insular_frontal_opercular": "52 PI Ig PoI1 PoI2 FOP2 FOP3 MI AVI AAIC Pir FOP4 FOP5",
    "medial_temporal": "H PreS EC PeEc PHA1 PHA2 PHA3", "lateral_temporal": "PHT TE1p TE1m TE1a TE2p TE2a TGv TGd TF",
    "tpo_junction": "TPOJ1 TPOJ2 TPOJ3 STV PSL", "superior_parietal": "LIPv LIPd VIP AIP MIP 7PC 7AL 7Am 7PL 7Pm",
    "inferior_parietal": "PGp PGs PGi PFm PF PFt PFop IP0 IP1 IP2",
    "posterior_cingulate": "DVT ProS POS1 POS2 RSC v23ab d23ab 31pv 31pd 31a 23d 23c PCV 7m",
    "anterior_cingulate_mpfc": "33pr p24pr a24pr p24 a24 p32pr a32pr d32 p32 s32 8BM 9m 10v 10r 25",
    "orbital_polar_frontal": "47s 47m a47r 11l 13l a10p p10p 10pp 10d OFC pOFC",
    "inferior_frontal": "44 45 IFJp IFJa IFSp IFSa 47l p47r",
    "dlpfc": "8C 8Av i6-8 s6-8 SFL 8BL 9p 9a 8Ad p9-46v a9-46v 46 9-46d"}
HCP_SECTIONS = {k: v.split() for k, v in HCP_SECTIONS.items()}
HCP_MMP = [a for areas in HCP_SECTIONS.values() for a in areas]
# FSL's HarvardOxford-Subcortical.xml labels (image value = index + 1), typo "Ventrical" included.
HO_SUBCORTICAL = [f"{side} {s}" for side in ("Left", "Right") for s in (
    "Cerebral White Matter", "Cerebral Cortex", "Lateral Ventrical", "Thalamus", "Caudate", "Putamen", "Pallidum",
    "Hippocampus", "Amygdala", "Accumbens")]
HO_SUBCORTICAL.insert(7, "Brain-Stem")
SYNTH = ["unknown", "medial_wall", "mtl_hippocampus", "mtl_parahippocampal", "language_stg", "frontal_ifg",
         "parietal_angular", "visual_control"]


def _write_annot(path, names, labels):
    ctab = np.zeros((len(names), 4), np.int32)
    ctab[:, 0] = np.arange(len(names)) * 3 % 256  # colours must differ: nibabel fills the ids from them
    ctab[:, 1] = np.arange(len(names)) // 85
    nib.freesurfer.write_annot(str(path), np.asarray(labels, np.int32), ctab, names, fill_ctab=True)


def _names_of(atlas):
    return np.array([atlas.names.get(k, "") for k in atlas.labels_V])


@pytest.fixture
def destrieux(tmp_path):
    lh = ["G_oc-temp_med-Parahip", "G_pariet_inf-Angular", "S_front_inf", "G_front_inf-Triangul",
          "Medial_wall", "S_temporal_sup", "G_oc-temp_med-Parahip", "Pole_occipital"]
    rh = ["Pole_temporal", "G_oc-temp_med-Parahip", "Unknown", "G_temporal_middle", "S_calcarine", "G_front_sup"]
    _write_annot(tmp_path / "lh.aparc.a2009s.annot", DESTRIEUX, [DESTRIEUX.index(n) for n in lh])
    rev = DESTRIEUX[::-1]  # a different colour-table order on the right: labels must match by name
    _write_annot(tmp_path / "rh.aparc.a2009s.annot", rev, [rev.index(n) for n in rh])
    return rois.load_destrieux(tmp_path), lh + rh


def test_group_names_are_real_atlas_labels():
    assert len(set(HCP_MMP)) == len(HCP_MMP) == 180
    known = {"destrieux": set(DESTRIEUX), "hcp_mmp": set(HCP_MMP), "synthetic": set(SYNTH),
             "harvard_oxford": set(HO_CORTICAL) | set(rois.HO_SUBCORTICAL)}
    for group, by_src in rois.REGION_GROUPS.items():
        for src, names in by_src.items():
            assert names == (rois.ALL,) or set(names) <= known[src], (group, src, set(names) - known[src])
    assert set(rois.EXCLUDED["destrieux"]) <= set(DESTRIEUX) and len(DESTRIEUX) == 76


def test_destrieux_annot_groups_and_hemispheres(destrieux):
    atlas, truth = destrieux
    assert atlas.source == "destrieux" and len(atlas.labels_V) == 14
    assert list(_names_of(atlas)) == truth  # both colour-table orders decode to the written names
    assert list(atlas.hemi_V) == ["L"] * 8 + ["R"] * 6
    mtl = rois.group_mask(atlas, "mtl")
    np.testing.assert_array_equal(np.flatnonzero(mtl), [0, 6, 9])
    np.testing.assert_array_equal(np.flatnonzero(rois.group_mask(atlas, "mtl", hemi="R")), [9])
    np.testing.assert_array_equal(np.flatnonzero(rois.group_mask(atlas, "mtl", hemi="lh")), [0, 6])
    np.testing.assert_array_equal(np.flatnonzero(rois.group_mask(atlas, "language")), [1, 3, 5, 8, 11])
    np.testing.assert_array_equal(np.flatnonzero(rois.group_mask(atlas, "frontal_sulcus")), [2])
    np.testing.assert_array_equal(np.flatnonzero(rois.group_mask(atlas, "frontal_gyrus")), [3, 13])
    cortex_L = rois.group_mask(atlas, "cortex", hemi="L")  # whole hemisphere minus the medial wall
    np.testing.assert_array_equal(np.flatnonzero(cortex_L), [0, 1, 2, 3, 5, 6, 7])
    assert not rois.group_mask(atlas, "cortex")[10]  # Unknown


def test_errors_name_the_problem(destrieux, tmp_path):
    atlas, _ = destrieux
    with pytest.raises(ValueError, match="unknown region group 'hippo'.*'language'.*'mtl'"):
        rois.group_mask(atlas, "hippo")
    _write_annot(tmp_path / "lh.tiny.annot", ["Unknown", "G_pariet_inf-Angular"], [0, 1])
    _write_annot(tmp_path / "rh.tiny.annot", ["Unknown", "G_pariet_inf-Angular"], [1, 0])
    tiny = rois.load_annot(tmp_path / "lh.tiny.annot", tmp_path / "rh.tiny.annot", source="destrieux")
    with pytest.raises(ValueError, match=r"missing.*'G_pariet_inf-Supramar'.*'G_precuneus'"):
        rois.group_mask(tiny, "parietal")
    np.testing.assert_array_equal(rois.group_mask(tiny, "parietal", strict=False), [False, True, True, False])
    with pytest.raises(ValueError, match="missing.*G_oc-temp_med-Parahip"):
        rois.group_mask(tiny, "mtl", strict=False)  # none present is an error even when lenient
    with pytest.raises(ValueError, match="hemi must be"):
        rois.group_mask(atlas, "mtl", hemi="X")


def test_synthetic_annot(tmp_path):
    lh, rh = [2, 3, 4, 1, 7], [5, 6, 2, 0]
    _write_annot(tmp_path / "lh.synthetic.annot", SYNTH, lh)
    _write_annot(tmp_path / "rh.synthetic.annot", SYNTH, rh)
    atlas = rois.load_annot(tmp_path / "lh.synthetic.annot", tmp_path / "rh.synthetic.annot")
    assert atlas.source == "synthetic"
    np.testing.assert_array_equal(np.flatnonzero(rois.group_mask(atlas, "mtl")), [0, 1, 7])
    np.testing.assert_array_equal(np.flatnonzero(rois.group_mask(atlas, "language", "L")), [2])
    np.testing.assert_array_equal(np.flatnonzero(rois.group_mask(atlas, "visual_control")), [4])
    assert not rois.group_mask(atlas, "cortex")[[3, 8]].any()  # medial_wall, unknown
    with pytest.raises(ValueError, match="no names for atlas source 'synthetic'"):
        rois.group_mask(atlas, "frontal_sulcus")


def _write_label_gii(path, table: dict[int, str], keys):
    labels = GiftiLabelTable()
    for key, name in table.items():
        lab = GiftiLabel(key=key)
        lab.label = name
        labels.labels.append(lab)
    darray = GiftiDataArray(np.array(keys, np.int32), intent="NIFTI_INTENT_LABEL")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(GiftiImage(labeltable=labels, darrays=[darray]), path)
    return path


def test_hcp_label_gifti(tmp_path):
    paths = []
    for hemi, offset, keys in (("L", 0, [1, 2, 0, 3]), ("R", 180, [183, 181, 181])):
        table = {0: "???", 1 + offset: f"{hemi}_H_ROI", 2 + offset: f"{hemi}_V1_ROI", 3 + offset: f"{hemi}_PGi_ROI"}
        paths.append(_write_label_gii(tmp_path / f"{hemi}.label.gii", table, keys))
    atlas = rois.load_gifti_labels(*paths)
    assert list(_names_of(atlas)) == ["H", "V1", "???", "PGi", "PGi", "H", "H"]
    np.testing.assert_array_equal(np.flatnonzero(rois.group_mask(atlas, "mtl", "R", strict=False)), [5, 6])
    np.testing.assert_array_equal(np.flatnonzero(rois.group_mask(atlas, "parietal", strict=False)), [3, 4])
    np.testing.assert_array_equal(rois.group_mask(atlas, "cortex"), [1, 1, 0, 1, 1, 1, 1])


def _narratives_mmp(root, derivative="afni-nosmooth", space="fsaverage6"):
    """HCP-MMP as Narratives ships it: one label.gii per hemisphere under derivatives/<derivative>/
    tpl-<space>, keys 1..180 (L_<area>_ROI) and 181..360 (R_<area>_ROI), every area on one vertex."""
    folder = root / "derivatives" / derivative / f"tpl-{space}"
    paths = []
    for hemi, offset in (("L", 0), ("R", 180)):
        table = {0: "???"} | {offset + 1 + i: f"{hemi}_{a}_ROI" for i, a in enumerate(HCP_MMP)}
        keys = [0] + [offset + 1 + i for i in range(180)]
        paths.append(_write_label_gii(folder / f"tpl-{space}_hemi-{hemi}_desc-MMP_dseg.label.gii", table, keys))
    return tuple(paths)


def test_narratives_mmp_label_gii_found_and_read(tmp_path):
    from types import SimpleNamespace

    from assocjax.pipeline import inputs, run

    root = tmp_path / "narratives"
    pair = _narratives_mmp(root)
    assert inputs._atlas(root, "fsaverage6", "mmp", "afni-smooth") == (pair, None)  # afni-nosmooth's, as a fallback
    assert inputs._atlas(root, "fsaverage6", "auto", "afni-nosmooth") == (pair, None)  # no annot: auto finds it
    with pytest.raises(FileNotFoundError, match=r"--data.atlas mmp: no tpl-fsaverage5_hemi-L/R_desc-MMP.*tpl-fsaverage5"):
        inputs._atlas(root, "fsaverage5", "mmp", "afni-nosmooth")
    label = root / "derivatives" / "freesurfer" / "fsaverage6" / "label"
    label.mkdir(parents=True)
    for h in ("lh", "rh"):
        _write_annot(label / f"{h}.aparc.a2009s.annot", DESTRIEUX, [1, 2])
    assert inputs._atlas(root, "fsaverage6", "auto", "afni-nosmooth")[0][0].name == "lh.aparc.a2009s.annot"
    assert inputs._atlas(root, "fsaverage6", "mmp", "afni-nosmooth") == (pair, None)

    atlas = run._atlas(SimpleNamespace(atlas=pair, hemi="both", kind="surface"), SimpleNamespace(keep_V=np.ones(362, bool)))
    assert atlas.source == "hcp_mmp" and list(atlas.hemi_V) == ["L"] * 181 + ["R"] * 181
    names = _names_of(atlas)
    assert list(names[1:181]) == HCP_MMP == list(names[182:]) and names[0] == names[181] == "???"
    for group in rois.groups_for("hcp_mmp"):  # every group complete (strict) on the real area names
        mask = rois.group_mask(atlas, group)
        want = HCP_MMP if group == "cortex" else rois.REGION_GROUPS[group]["hcp_mmp"]
        assert sorted(names[mask]) == sorted(want * 2), group
    left = run._atlas(SimpleNamespace(atlas=pair, hemi="L", kind="surface"), SimpleNamespace(keep_V=np.ones(181, bool)))
    assert set(left.hemi_V) == {"L"} and list(_names_of(left)[1:]) == HCP_MMP


def test_hcp_groups_are_the_anatomy_of_the_other_atlases():
    hcp = {g: set(by["hcp_mmp"]) for g, by in rois.REGION_GROUPS.items() if "hcp_mmp" in by and g != "cortex"}
    sec = {k: set(v) for k, v in HCP_SECTIONS.items()}
    # parietal: both parietal lobules, and the precuneus (medial area 7: 7Am, 7Pm, 7m; PCV), as
    # Destrieux's G_parietal_sup / G_precuneus and Harvard-Oxford's Superior Parietal Lobule /
    # Precuneous Cortex; area 31 and 23 stay posterior cingulate
    assert hcp["parietal"] == sec["superior_parietal"] | sec["inferior_parietal"] | {"7m", "PCV"}
    assert {"7AL", "7PL", "7Am", "7Pm", "7m", "PCV"} <= hcp["parietal"]
    assert not hcp["parietal"] & {"31pd", "31pv", "31a", "v23ab", "d23ab"}
    # frontal gyrus: inferior (44, 45, 47l, p47r), middle and superior frontal gyrus (the whole
    # dorsolateral prefrontal section); the IFS / IFJ areas are frontal_sulcus
    assert hcp["frontal_gyrus"] == (sec["inferior_frontal"] - hcp["frontal_sulcus"]) | sec["dlpfc"]
    assert hcp["frontal_sulcus"] <= sec["inferior_frontal"]
    assert hcp["mtl"] == sec["medial_temporal"]
    assert hcp["visual_control"] == sec["primary_visual"] | sec["early_visual"]
    assert hcp["language"] - {"44", "45"} - sec["inferior_parietal"] <= (
        sec["auditory_association"] | sec["lateral_temporal"])


def test_groups_overlap_alike_on_every_atlas():
    """Which groups share labels (language with the IFG and the angular gyrus) and which do not is
    the same on Destrieux, HCP-MMP and Harvard-Oxford."""
    sources = ("destrieux", "hcp_mmp", "harvard_oxford")
    groups = [g for g in rois.REGION_GROUPS if g not in ("cortex", *rois.MTL_STRUCTURES)]
    assert all(src in rois.REGION_GROUPS[g] for g in groups for src in sources if g != "frontal_sulcus")

    def overlaps(src):
        named = {g: set(rois.REGION_GROUPS[g].get(src, ())) for g in groups}
        return {(a, b) for a in groups for b in groups if a < b and named[a] & named[b]}

    want = {("frontal_gyrus", "language"), ("language", "parietal")}
    assert [overlaps(src) for src in sources] == [want] * 3
    # ... and share the same anatomy there: IFG pars opercularis / triangularis, angular gyrus
    shared = {src: set(rois.REGION_GROUPS["language"][src]) & set(rois.REGION_GROUPS["frontal_gyrus"][src])
              for src in sources}
    assert shared == {"destrieux": {"G_front_inf-Opercular", "G_front_inf-Triangul"}, "hcp_mmp": {"44", "45"},
                      "harvard_oxford": {"Inferior Frontal Gyrus, pars triangularis",
                                         "Inferior Frontal Gyrus, pars opercularis"}}


def test_docs_region_table_is_generated_from_the_groups():
    page = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    start, end = "<!-- region-table: start -->\n", "<!-- region-table: end -->"
    assert start in page and end in page
    assert page.split(start, 1)[1].split(end, 1)[0] == rois.region_table()
    table = rois.region_table()
    assert "`7Am`" in table and "`Hippocampus`, `Amygdala`" in table


def _ho_image():
    data = np.zeros((4, 2, 2), np.int16)  # x = 2 * (i - 2) mm: i < 2 is left
    data[0, 0, 0] = data[3, 1, 1] = 1 + HO_CORTICAL.index("Parahippocampal Gyrus, anterior division")
    data[1, 1, 0] = 1 + HO_CORTICAL.index("Parahippocampal Gyrus, posterior division")
    data[2, 0, 1] = 1 + HO_CORTICAL.index("Angular Gyrus")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[0, 3] = -4.0
    return nib.Nifti1Image(data, affine), data


def test_harvard_oxford_nifti(tmp_path):
    img, data = _ho_image()
    nib.save(img, tmp_path / "ho.nii.gz")
    atlas = rois.load_harvard_oxford(tmp_path / "ho.nii.gz", ["Background"] + HO_CORTICAL)
    # i = 2 is the x = 0 column: its 2 mm voxels straddle the midline, so they are neither hemisphere's
    assert atlas.labels_V.shape == (16,) and list(atlas.hemi_V) == ["L"] * 8 + [""] * 4 + ["R"] * 4
    with pytest.raises(ValueError, match=r"'mtl'.*missing.*\['Hippocampus', 'Amygdala'\]"):
        rois.group_mask(atlas, "mtl")  # the cortical atlas alone has no complete MTL
    mtl = rois.group_mask(atlas, "mtl", strict=False)
    np.testing.assert_array_equal(mtl.reshape(data.shape), np.isin(data, [34, 35]))
    assert rois.group_mask(atlas, "mtl", "L", strict=False).sum() == 2
    assert rois.group_mask(atlas, "mtl", "R", strict=False).sum() == 1
    # FSL XML names (value = index + 1) and a voxel mask in data[mask] order give the same labels
    items = "".join(f'<label index="{i}">{n}</label>' for i, n in enumerate(HO_CORTICAL))
    xml = f"<atlas><data>{items}</data></atlas>"
    (tmp_path / "HarvardOxford-Cortical.xml").write_text(xml.replace("'", "&apos;"))
    keep = data > 0
    masked = rois.load_harvard_oxford(img, tmp_path / "HarvardOxford-Cortical.xml", mask=keep)
    np.testing.assert_array_equal(masked.labels_V, data[keep])
    assert list(masked.hemi_V) == ["L", "L", "", "R"]
    assert rois.group_mask(masked, "parietal", strict=False).sum() == 1


def _fsl_xml(path, names):
    items = "".join(f'<label index="{i}">{n}</label>' for i, n in enumerate(names))
    path.write_text(f"<atlas><data>{items}</data></atlas>".replace("'", "&apos;"))


def test_volumetric_mtl_has_hippocampus_and_amygdala(tmp_path):
    cort_img, cort = _ho_image()
    sub = np.zeros(cort.shape, np.int16)
    value = {n: 1 + HO_SUBCORTICAL.index(n) for n in HO_SUBCORTICAL}
    sub[0, 1, 1], sub[1, 0, 1] = value["Left Hippocampus"], value["Left Amygdala"]
    sub[3, 0, 0], sub[2, 1, 0] = value["Right Hippocampus"], value["Right Thalamus"]
    sub[2, 0, 0] = sub[1, 1, 1] = value["Left Cerebral White Matter"]
    sub[0, 0, 0] = value["Left Hippocampus"]  # over the cortical parahippocampal label: hippocampus wins
    # FSL's layout ($FSLDIR/data/atlases, as nilearn downloads it)
    (tmp_path / "HarvardOxford").mkdir()
    nib.save(cort_img, tmp_path / "HarvardOxford" / "HarvardOxford-cort-maxprob-thr25-2mm.nii.gz")
    nib.save(nib.Nifti1Image(sub, cort_img.affine), tmp_path / "HarvardOxford" / "HarvardOxford-sub-maxprob-thr25-2mm.nii.gz")
    _fsl_xml(tmp_path / "HarvardOxford-Cortical.xml", HO_CORTICAL)
    _fsl_xml(tmp_path / "HarvardOxford-Subcortical.xml", HO_SUBCORTICAL)
    atlas = rois.load_harvard_oxford_fsl(tmp_path)
    names = _names_of(atlas).reshape(cort.shape)
    hippo, amyg = names == "Hippocampus", names == "Amygdala"
    assert hippo.sum() == 3 and amyg.sum() == 1 and hippo[0, 0, 0]
    mtl = rois.group_mask(atlas, "mtl").reshape(cort.shape)  # strict: every MTL label is there
    np.testing.assert_array_equal(mtl, hippo | amyg | np.isin(names, HO_CORTICAL[33:35]))
    assert mtl.sum() == 6 and not mtl[2, 1, 0] and not mtl[2, 0, 0]  # thalamus, white matter: no group's
    assert rois.group_mask(atlas, "mtl", "R").reshape(cort.shape)[3, 0, 0]  # right hippocampus, x > 0
    assert rois.group_mask(atlas, "mtl", "L").sum() == 4
    assert not (rois.group_mask(atlas, "cortex").reshape(cort.shape) & (hippo | amyg)).any()
    assert not set(atlas.names.values()) & {"Thalamus", "Cerebral White Matter", "Left Thalamus"}
    # the same from an image and a nilearn-style name list
    direct = rois.load_harvard_oxford(cort_img, ["Background"] + HO_CORTICAL,
                                      subcortical=(nib.Nifti1Image(sub, cort_img.affine), ["Background"] + HO_SUBCORTICAL))
    np.testing.assert_array_equal(np.where(_names_of(direct) == "Background", "", _names_of(direct)), _names_of(atlas))
    with pytest.raises(ValueError, match="not on the cortical atlas's grid"):
        rois.load_harvard_oxford(cort_img, HO_CORTICAL, subcortical=(nib.Nifti1Image(sub[:2], cort_img.affine),
                                                                     HO_SUBCORTICAL))
    with pytest.raises(ValueError, match=r"no \['Hippocampus', 'Amygdala'\]"):
        rois.load_harvard_oxford(cort_img, HO_CORTICAL, subcortical=(nib.Nifti1Image(sub, cort_img.affine), HO_CORTICAL))
    with pytest.raises(FileNotFoundError, match="HarvardOxford-cort-maxprob-thr50-1mm.nii.gz"):
        rois.load_harvard_oxford_fsl(tmp_path, threshold=50, resolution_mm=1)


def _atlas(n_L, n_R, names=("a", "b")):
    labels = np.r_[np.arange(n_L) % 2, np.arange(n_R) % 2]
    return rois.Atlas(labels, dict(enumerate(names)), np.array(["L"] * n_L + ["R"] * n_R), "synthetic")


def _synth_atlas():
    # 6 vertices: mtl (L: 0, 1; R: 4), language (L: 2), visual (R: 5), medial wall (3)
    keys = np.array([2, 3, 4, 1, 3, 7])
    return rois.Atlas(keys, dict(enumerate(SYNTH)), np.array(list("LLLLRR")), "synthetic")


def test_summary_mean_is_exact_and_tidy():
    rng = np.random.default_rng(1)
    c_S = rng.normal(size=7)
    dev = np.array([0.5, -0.5, 3.0, 9.0, 0.0, -2.0])  # zero-mean within each region's hemisphere part
    x = c_S[:, None] + dev
    x[2, 0] = x[2, 1] = np.nan  # subject 2 loses its left MTL: its mean is still c_S[2] elsewhere
    x[:, 3] = np.nan
    grid = rois.region_summary(x, _synth_atlas(), groups=["mtl", "language"], n_boot=200, labels=True)
    assert grid.sel(region="mtl", hemi="R")["mean"].item() == pytest.approx(c_S.mean(), abs=1e-12)
    assert not grid["present"].sel(region="language", hemi="R") and np.isnan(grid.sel(region="language", hemi="R")["mean"])
    rows = results.to_rows(grid)
    by = {(r["region"], r["hemi"]): r for r in rows}
    assert by[("mtl", "R")]["mean"] == pytest.approx(c_S.mean() + 0.0, abs=1e-12)
    assert by[("mtl", "L")]["mean"] == pytest.approx(np.delete(c_S, 2).mean(), abs=1e-12)
    assert by[("mtl", "L")]["n_subjects"] == 6 and by[("mtl", "both")]["n_vertices"] == 3
    assert by[("language", "L")]["mean"] == pytest.approx(c_S.mean() + 3.0, abs=1e-12)
    assert ("language", "R") not in by  # no vertex there: no row
    assert by[("visual_control", "R")]["level"] == "label" and ("medial_wall", "L") not in by
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(rows)
    assert list(df.columns) == ["region", "level", "hemi", "n_vertices", "mean", "ci_low", "ci_high", "n_subjects"]


def _plain_bootstrap(m_S, idx_IS, ci=0.95):
    boot = np.array([np.nanmean(m_S[i]) for i in idx_IS])
    return np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2])


def test_bootstrap_matches_plain_numpy_and_is_seeded():
    rng = np.random.default_rng(2)
    S, B = 12, 500
    x = rng.normal(size=(S, 20)) + rng.normal(size=(S, 1))
    x[3, :10] = np.nan  # subject 3 has no left-hemisphere data
    atlas = _atlas(10, 10)
    rows = results.to_rows(rois.region_summary(x, atlas, groups=[], labels=True, n_boot=B, seed=5, ci=0.9))
    idx = stats.bootstrap_indices(S, B, seed=5)
    for r in rows:
        mask = (atlas.labels_V == (0 if r["region"] == "a" else 1)) & (r["hemi"] == "both" or atlas.hemi_V == r["hemi"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # subject 3's empty left hemisphere
            m_S = np.nanmean(x[:, mask], axis=1)
        lo, hi = _plain_bootstrap(m_S, idx, ci=0.9)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi), rel=1e-12)
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
        assert r["n_subjects"] == (S - 1 if r["hemi"] == "L" else S)
    again = results.to_rows(rois.region_summary(x, atlas, groups=[], labels=True, n_boot=B, seed=5, ci=0.9))
    other = results.to_rows(rois.region_summary(x, atlas, groups=[], labels=True, n_boot=B, seed=6, ci=0.9))
    assert again == rows and other != rows


def test_ci_narrows_with_more_subjects():
    rng = np.random.default_rng(3)
    atlas = _synth_atlas()

    def width(S):
        x = rng.normal(loc=0.3, size=(S, 1)) + 0.1 * rng.normal(size=(S, 6))
        r = rois.region_summary(x, atlas, groups=["mtl"], hemis=("both",), n_boot=1000).sel(region="mtl", hemi="both")
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
        return float(r["ci_high"] - r["ci_low"])

    w10, w200 = width(10), width(200)
    assert w200 < 0.5 * w10  # ~ 1 / sqrt(S): expect a ratio near 0.22


def test_scores_must_match_atlas():
    with pytest.raises(ValueError, match="scores have 5 vertices, atlas has 6"):
        rois.region_summary(np.zeros((2, 5)), _synth_atlas())
